/**
 * Summarises a V8 .cpuprofile:
 * `tsx bench/tools/profile-summary.ts FILE [N] [--by function|file|package] [--inclusive]`.
 * Self time by default: the share of samples whose innermost frame is in each function, file or
 * package (our own source files count as packages of their own, by directory under src/).
 * `--inclusive` counts a sample for every key on its stack (once per key, however deep).
 */
import { readFileSync } from "node:fs";

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount: number;
  children?: number[];
}
const args = process.argv.slice(2);
const inclusiveIndex = args.indexOf("--inclusive");
const inclusive = inclusiveIndex >= 0;
if (inclusive) args.splice(inclusiveIndex, 1);
const byIndex = args.indexOf("--by");
const by = byIndex >= 0 ? args.splice(byIndex, 2)[1] : "function";
const [file, count = "25"] = args;
if (file === undefined) throw new Error("usage: profile-summary FILE [N] [--by function|file|package]");
const profile = JSON.parse(readFileSync(file, "utf8")) as { nodes: Node[] };
const total = profile.nodes.reduce((n, node) => n + node.hitCount, 0);

function keyOf({ functionName, url, lineNumber }: Node["callFrame"]): string {
  const where = url.replace(/^.*node_modules\//, "~/").replace(/^.*\/work\/main\//, "");
  if (by === "file") return where || `(${functionName || "native"})`;
  if (by === "package") {
    const pkg = /^~\/((?:@[^/]+\/)?[^/]+)/.exec(where)?.[1];
    if (pkg !== undefined) return pkg;
    const ours = /^(?:dist\/)?(src\/[^/]+)/.exec(where)?.[1];
    if (ours !== undefined) return ours;
    if (where.startsWith("node:")) return where.split("/")[0] ?? where;
    return where || `(${functionName || "native"})`;
  }
  return `${functionName || "(anonymous)"} ${where}:${lineNumber + 1}`;
}

const parentOf = new Map<number, Node>();
for (const node of profile.nodes) for (const child of node.children ?? []) parentOf.set(child, node);

const byKey = new Map<string, number>();
for (const node of profile.nodes) {
  if (node.hitCount === 0) continue;
  const keys = new Set<string>();
  for (let at: Node | undefined = node; at !== undefined; at = inclusive ? parentOf.get(at.id) : undefined) {
    keys.add(keyOf(at.callFrame));
  }
  for (const key of keys) byKey.set(key, (byKey.get(key) ?? 0) + node.hitCount);
}
for (const [key, hits] of [...byKey].sort((a, b) => b[1] - a[1]).slice(0, Number(count))) {
  console.log(`${((hits / total) * 100).toFixed(1).padStart(5)}%  ${key}`);
}
