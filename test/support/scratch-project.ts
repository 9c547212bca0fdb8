/**
 * A scratch plain-JavaScript project that installs a packed tarball the way an app would, with
 * `npm ci` from a lockfile: the tarball's dependencies are pinned to the versions this repo's
 * own lockfile installs, so the install needs no registry metadata (the npm cache that the
 * repo's `npm ci` filled has every tarball; `--prefer-offline` fetches one only if it is missing).
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

type LockEntry = Record<string, unknown> & {
  readonly dependencies?: Record<string, string>;
  readonly optionalDependencies?: Record<string, string>;
};

interface PackageJson {
  readonly name: string;
  readonly version: string;
  readonly dependencies?: Record<string, string>;
}

/** `npm pack`s `packageDir` into `destination`; returns the tarball's path. */
export async function npmPack(packageDir: string, destination: string): Promise<string> {
  const { stdout } = await run("npm", ["pack", "--silent", "--pack-destination", destination], {
    cwd: packageDir,
  });
  const name = stdout.trim().split("\n").at(-1);
  if (name === undefined || name === "") throw new Error("npm pack printed no tarball name");
  return join(destination, name);
}

/**
 * Installs `tarball` into the (empty) directory `dir` as its one dependency; `repoLockFile` is
 * the lockfile whose versions the tarball's dependencies are pinned to.
 */
export async function installScratchProject(
  dir: string,
  tarball: string,
  repoLockFile: string,
): Promise<void> {
  const file = basename(tarball);
  copyFileSync(tarball, join(dir, file));
  const manifest = await packageJsonOf(tarball);
  const spec = `file:${file}`;
  const integrity = `sha512-${createHash("sha512").update(readFileSync(tarball)).digest("base64")}`;
  const packages: Record<string, unknown> = {
    "": { name: "scratch-app", dependencies: { [manifest.name]: spec } },
    [`node_modules/${manifest.name}`]: {
      version: manifest.version,
      resolved: spec,
      integrity,
      dependencies: manifest.dependencies ?? {},
    },
    ...closureOf(manifest.dependencies ?? {}, repoLockFile),
  };
  writeFileSync(
    join(dir, "package.json"),
    JSON.stringify({ name: "scratch-app", private: true, dependencies: { [manifest.name]: spec } }),
  );
  writeFileSync(
    join(dir, "package-lock.json"),
    JSON.stringify({ name: "scratch-app", lockfileVersion: 3, requires: true, packages }),
  );
  await run("npm", ["ci", "--prefer-offline", "--ignore-scripts", "--no-audit", "--no-fund"], { cwd: dir });
}

/** The package.json inside a tarball made by `npm pack` (`tar` is on every machine this runs on). */
async function packageJsonOf(tarball: string): Promise<PackageJson> {
  const { stdout } = await run("tar", ["-xzOf", tarball, "package/package.json"]);
  return JSON.parse(stdout) as PackageJson;
}

/**
 * The lock entries of `dependencies` and everything they depend on, at the paths the repo's
 * lockfile puts them (npm's hoisted layout: a nested copy sits under its parent).
 */
function closureOf(dependencies: Record<string, string>, repoLockFile: string): Record<string, LockEntry> {
  const lock = JSON.parse(readFileSync(repoLockFile, "utf8")) as { packages: Record<string, LockEntry> };
  const result: Record<string, LockEntry> = {};
  const queue = Object.keys(dependencies).map((name) => ({ from: "", name, optional: false }));
  for (let item = queue.shift(); item !== undefined; item = queue.shift()) {
    const path = locate(lock.packages, item.from, item.name);
    if (path === undefined) {
      if (item.optional) continue;
      throw new Error(`${item.name} (needed by ${item.from || "the package"}) is not in ${repoLockFile}`);
    }
    if (path in result) continue;
    const entry = lock.packages[path] as LockEntry;
    // Flags about the repo's own tree (dev-only, peer): recomputed by npm for the scratch tree.
    const { dev: _dev, devOptional: _devOptional, peer: _peer, ...copied } = entry;
    result[path] = copied;
    for (const name of Object.keys(entry.dependencies ?? {}))
      queue.push({ from: path, name, optional: false });
    for (const name of Object.keys(entry.optionalDependencies ?? {})) {
      queue.push({ from: path, name, optional: true });
    }
  }
  return result;
}

/** Where Node's resolution would find `name` required from the package at `from`. */
function locate(packages: Record<string, LockEntry>, from: string, name: string): string | undefined {
  let base = from;
  for (;;) {
    const candidate = `${base === "" ? "" : `${base}/`}node_modules/${name}`;
    if (candidate in packages) return candidate;
    if (base === "") return undefined;
    base = base.slice(0, base.lastIndexOf("node_modules/")).replace(/\/$/, "");
  }
}
