#!/usr/bin/env node
// A checkout (src/ present) always runs its TypeScript sources through tsx, so a stale dist/
// from an earlier `npm run build` can never run instead of the code in front of you. The
// container image ships dist/ without src/, and runs the compiled CLI.
import { existsSync } from "node:fs";

const sources = new URL("../src/cli/main.ts", import.meta.url);
if (existsSync(sources)) {
  const { register } = await import("tsx/esm/api");
  register();
  await import(sources.href);
} else {
  await import(new URL("../dist/src/cli/main.js", import.meta.url).href);
}
