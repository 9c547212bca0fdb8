import { readFileSync } from "node:fs";

/** What `keybroker_build_info` reports: nothing that varies per request or identifies a user. */
export interface BuildInfo {
  readonly version: string;
  readonly nodeVersion: string;
  readonly commit: string;
}

// From src/app/ (tsx) the package is two folders up; from dist/src/app/ (the image) three.
const CANDIDATES = ["../../package.json", "../../../package.json"];

/** This package's version (read once at start-up), Node's, and the commit the image was built from. */
export function readBuildInfo(commit: string): BuildInfo {
  return { version: packageVersion(), nodeVersion: process.versions.node, commit };
}

function packageVersion(): string {
  for (const candidate of CANDIDATES) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(candidate, import.meta.url), "utf8")) as {
        name?: unknown;
        version?: unknown;
      };
      if (pkg.name === "keybroker" && typeof pkg.version === "string") return pkg.version;
    } catch {
      // Not there in this layout: try the next.
    }
  }
  return "unknown";
}
