/**
 * The per-stage breakdown of a broker CPU profile (issue 17 item 1): each sample is charged to the
 * innermost frame on its stack that belongs to a named stage (so Node's stream and socket internals
 * count for whoever called them), over a time window of the run, then scaled to µs per call.
 */
import { readFileSync } from "node:fs";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

// First match wins; tested against "<url> <function>" with node_modules paths kept.
const STAGES: ReadonlyArray<readonly [string, RegExp]> = [
  ["caller key", /src\/auth\/caller-(authenticator|key-format)|src\/api\/rpc\/call-guard/],
  ["token", /src\/auth\/|node_modules\/jose\//],
  ["audit encode/hash", /src\/audit\/audit-(encoding|chain|entry)/],
  ["audit write", /src\/audit\/|src\/store\/audit\.repository/],
  ["policy", /src\/policy\//],
  ["rate limit", /src\/proxy\/(call-rate-limiter|rate-limit-policy|concurrency-limit)/],
  ["signals", /src\/signals\/|src\/api\/rpc\/misuse-feed/],
  ["database", /node_modules\/(pg|pg-protocol|pg-pool|pg-types|kysely|@electric-sql)\/|src\/store\//],
  ["crypto", /src\/crypto\/|src\/keys\/|node:crypto|\((?:Cipher|Decipher|Hash|Hmac)[^)]*\)/],
  ["scrub", /src\/outbound\/(response-scrubber|pattern-automaton|scrub|.*redactor|content-decoding)/],
  ["outbound", /node_modules\/undici\/|src\/outbound\//],
  ["metrics", /node_modules\/prom-client\/|src\/observability\//],
  [
    "transport",
    /node_modules\/(@grpc|@bufbuild|@connectrpc)\/|src\/api\/|src\/gen\/|node:internal\/http2|\((writev|writeLatin1String|writeBuffer|writeUtf8String)\)/,
  ],
  ["proxy service", /src\/(proxy|secrets)\//],
  ["garbage collection", /\(garbage collector\)/],
];
const IDLE = /\((idle)\)/;

export interface StageBreakdown {
  readonly stage: string;
  readonly share: number;
  readonly microsPerCall: number;
}

/** µs per call per stage, from the samples in [from, to] of the run (fractions of its length). */
export function profileStages(
  file: string,
  cpuMicrosPerCall: number,
  window: { from: number; to: number } = { from: 0.5, to: 0.95 },
): StageBreakdown[] {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, ProfileNode>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n);
  const stageOfNode = new Map<number, string>();
  const stageOf = (leaf: ProfileNode): string => {
    const known = stageOfNode.get(leaf.id);
    if (known !== undefined) return known;
    let found = "runtime (event loop, node internals)";
    for (let at: ProfileNode | undefined = leaf; at !== undefined; at = parent.get(at.id)) {
      const text = `${at.callFrame.url} (${at.callFrame.functionName})`;
      const hit = STAGES.find(([, pattern]) => pattern.test(text));
      if (hit !== undefined) {
        found = hit[0];
        break;
      }
    }
    stageOfNode.set(leaf.id, found);
    return found;
  };
  let t = profile.startTime;
  const times = profile.timeDeltas.map((d) => {
    t += d;
    return t;
  });
  const first = times[0] ?? 0;
  const last = times.at(-1) ?? 0;
  const lo = first + (last - first) * window.from;
  const hi = first + (last - first) * window.to;
  const counts = new Map<string, number>();
  let busy = 0;
  profile.samples.forEach((id, i) => {
    const at = times[i] ?? 0;
    const node = byId.get(id);
    if (at < lo || at > hi || node === undefined || IDLE.test(`(${node.callFrame.functionName})`)) return;
    busy += 1;
    const stage = stageOf(node);
    counts.set(stage, (counts.get(stage) ?? 0) + 1);
  });
  return [...counts]
    .sort((a, b) => b[1] - a[1])
    .map(([stage, n]) => ({ stage, share: n / busy, microsPerCall: (n / busy) * cpuMicrosPerCall }));
}
