import { describe, expect, it } from "vitest";
import { readRepoFile } from "./deploy-files.js";

// Issue 16 item 4: development, tests, CI and the image run one Node release, the current LTS
// line, and nothing claims another. The `node` devDependency is the source of truth: npm puts
// its binary first on PATH for every script, so this very test runs on it.
const pkg = JSON.parse(readRepoFile("package.json")) as {
  engines: Record<string, string>;
  devDependencies: Record<string, string>;
};
const release = pkg.devDependencies.node ?? "";
const major = release.split(".")[0];

describe("the Node release", () => {
  it("is pinned exactly, on an even (LTS) line", () => {
    expect(release).toMatch(/^\d+\.\d+\.\d+$/);
    expect(Number(major) % 2).toBe(0);
  });

  it("runs this test (npm scripts and vitest workers use node_modules/.bin/node)", () => {
    expect(process.versions.node).toBe(release);
  });

  it("is what engines asks for and what @types/node describes", () => {
    expect(pkg.engines.node).toBe(`>=${release}`);
    expect(pkg.devDependencies["@types/node"]?.split(".")[0]).toBe(major);
  });

  it("is the image's base (every stage) and what CI checks", () => {
    expect(readRepoFile("Dockerfile")).toMatch(
      new RegExp(`ARG NODE_IMAGE=node:${release.replaceAll(".", "\\.")}-slim`),
    );
    expect(readRepoFile(".ci/run")).toContain("devDependencies.node");
  });
});
