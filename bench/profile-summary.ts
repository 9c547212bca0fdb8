/** Prints the top self-time functions of a V8 .cpuprofile: `tsx bench/profile-summary.ts FILE [N]`. */
import { readFileSync } from "node:fs";

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount: number;
}
const [file, count = "25"] = process.argv.slice(2);
if (file === undefined) throw new Error("usage: profile-summary FILE [N]");
const profile = JSON.parse(readFileSync(file, "utf8")) as { nodes: Node[] };
const total = profile.nodes.reduce((n, node) => n + node.hitCount, 0);
const byFrame = new Map<string, number>();
for (const node of profile.nodes) {
  const { functionName, url, lineNumber } = node.callFrame;
  const where = url.replace(/^.*node_modules\//, "~/").replace(/^.*\/work\/main\//, "");
  const key = `${functionName || "(anonymous)"} ${where}:${lineNumber + 1}`;
  byFrame.set(key, (byFrame.get(key) ?? 0) + node.hitCount);
}
for (const [key, hits] of [...byFrame].sort((a, b) => b[1] - a[1]).slice(0, Number(count))) {
  console.log(`${((hits / total) * 100).toFixed(1).padStart(5)}%  ${key}`);
}
