import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root (this file is test/unit/deploy/deploy-files.ts). */
export const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));

export function repoPath(relative: string): string {
  return join(repoRoot, relative);
}

export function readRepoFile(relative: string): string {
  return readFileSync(repoPath(relative), "utf8");
}

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

export function isObject(value: Json | undefined): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** `value[path[0]][path[1]]…`, or undefined when any step is missing. Numbers index arrays. */
export function at(value: Json | undefined, ...path: (string | number)[]): Json | undefined {
  let current: Json | undefined = value;
  for (const step of path) {
    if (typeof step === "number") {
      current = Array.isArray(current) ? current[step] : undefined;
    } else {
      current = isObject(current) ? current[step] : undefined;
    }
  }
  return current;
}

export function asObject(value: Json | undefined, what: string): JsonObject {
  if (!isObject(value)) throw new Error(`${what} is not a mapping`);
  return value;
}

export function asArray(value: Json | undefined, what: string): Json[] {
  if (!Array.isArray(value)) throw new Error(`${what} is not a list`);
  return value;
}

export function asString(value: Json | undefined, what: string): string {
  if (typeof value !== "string") throw new Error(`${what} is not a string`);
  return value;
}

function run(command: string, args: readonly string[], input?: string) {
  return spawnSync(command, args, {
    cwd: repoRoot,
    encoding: "utf8",
    timeout: 60_000,
    maxBuffer: 16 * 1024 * 1024,
    ...(input === undefined ? {} : { input }),
  });
}

// ------------------------------------------------------------------------------------------
// YAML. No YAML library is among the project's npm dependencies, so YAML is read by PyYAML
// (Debian package python3-yaml; the Debian docker-compose 1.x package depends on it).
// ------------------------------------------------------------------------------------------

const YAML_TO_JSON = "import json, sys, yaml; json.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)";
let pythonWithYaml: string | undefined;

function findPythonWithYaml(): string {
  if (pythonWithYaml !== undefined) return pythonWithYaml;
  for (const candidate of ["/usr/bin/python3", "python3"]) {
    if (run(candidate, ["-c", "import yaml"]).status === 0) {
      pythonWithYaml = candidate;
      return candidate;
    }
  }
  throw new Error(
    "no python3 with PyYAML: install the Debian package python3-yaml (apt-get install -y python3-yaml)",
  );
}

/** Every document of a YAML stream, as JSON values. */
export function parseYamlDocuments(text: string): Json[] {
  const result = run(findPythonWithYaml(), ["-c", YAML_TO_JSON], text);
  if (result.status !== 0) throw new Error(`YAML does not parse:\n${result.stderr}`);
  return JSON.parse(result.stdout) as Json[];
}

// ------------------------------------------------------------------------------------------
// docker compose. `config` validates the file against the Compose schema and prints the
// resolved model; v2 prints JSON on request, v1 (Debian bookworm's docker-compose 1.29) YAML.
// ------------------------------------------------------------------------------------------

interface ComposeCli {
  readonly command: string;
  readonly prefix: readonly string[];
  readonly major: 1 | 2;
}

export function findComposeCli(): ComposeCli {
  const plugin = run("docker", ["compose", "version", "--short"]);
  if (plugin.status === 0) return { command: "docker", prefix: ["compose"], major: 2 };
  const standalone = run("docker-compose", ["version", "--short"]);
  if (standalone.status === 0) {
    return {
      command: "docker-compose",
      prefix: [],
      major: standalone.stdout.trim().startsWith("1.") ? 1 : 2,
    };
  }
  throw new Error(
    "neither `docker compose` nor `docker-compose` runs here: install one (Debian: apt-get install -y docker-compose)",
  );
}

/** The resolved compose model of a file: validated by compose itself, then read as JSON. */
export function composeConfig(file: string): JsonObject {
  const cli = findComposeCli();
  const args = [
    ...cli.prefix,
    "--file",
    repoPath(file),
    "config",
    ...(cli.major === 2 ? ["--format", "json"] : []),
  ];
  const result = run(cli.command, args);
  if (result.status !== 0) throw new Error(`compose rejected ${file}:\n${result.stderr}`);
  const model: Json =
    cli.major === 2 ? (JSON.parse(result.stdout) as Json) : (parseYamlDocuments(result.stdout)[0] ?? null);
  return asObject(model, `${file} as resolved by compose`);
}

// Compose v1 and v2 resolve some fields to different shapes; these read both.

export function composeService(model: JsonObject, name: string): JsonObject {
  return asObject(at(model, "services", name), `service ${name}`);
}

export function environmentOf(service: JsonObject): Record<string, string> {
  const raw = service.environment;
  const env: Record<string, string> = {};
  if (Array.isArray(raw)) {
    for (const entry of raw) {
      const text = asString(entry, "environment entry");
      const eq = text.indexOf("=");
      env[eq < 0 ? text : text.slice(0, eq)] = eq < 0 ? "" : text.slice(eq + 1);
    }
  } else if (isObject(raw)) {
    for (const [key, value] of Object.entries(raw)) env[key] = value === null ? "" : String(value);
  }
  return env;
}

export interface Mount {
  readonly source: string;
  readonly target: string;
  readonly readOnly: boolean;
}

export function mountsOf(service: JsonObject): Mount[] {
  const raw = service.volumes;
  if (!Array.isArray(raw)) return [];
  return raw.map((entry) => {
    if (typeof entry === "string") {
      const [source = "", target = "", mode = "rw"] = entry.split(":");
      return { source, target, readOnly: mode.split(",").includes("ro") };
    }
    const mount = asObject(entry, "volume");
    return {
      source: asString(mount.source, "volume source"),
      target: asString(mount.target, "volume target"),
      readOnly: mount.read_only === true,
    };
  });
}

export interface PublishedPort {
  readonly hostIp: string;
  readonly published: string;
  readonly target: string;
}

export function portsOf(service: JsonObject): PublishedPort[] {
  const raw = service.ports;
  if (!Array.isArray(raw)) return [];
  return raw.map((entry) => {
    if (typeof entry === "string") {
      const parts = entry.replace(/\/(tcp|udp)$/, "").split(":");
      const target = parts.pop() ?? "";
      const published = parts.pop() ?? "";
      return { hostIp: parts.join(":"), published, target };
    }
    const port = asObject(entry, "port");
    return {
      hostIp: typeof port.host_ip === "string" ? port.host_ip : "",
      published: String(port.published ?? ""),
      target: String(port.target ?? ""),
    };
  });
}

export function healthcheckDisabled(service: JsonObject): boolean {
  const check = service.healthcheck;
  return isObject(check) && (check.disable === true || at(check, "test", 0) === "NONE");
}

/** A Go/compose duration ("15s", "1m30s", "500ms") or a number of nanoseconds, in ms. */
export function durationMs(value: Json | undefined): number {
  if (typeof value === "number") return value / 1e6;
  const text = asString(value, "duration");
  const units: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1_000, ms: 1, us: 0.001, ns: 0.000001 };
  let total = 0;
  let rest = text;
  while (rest.length > 0) {
    const match = /^(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)/.exec(rest);
    if (match === null) throw new Error(`not a duration: ${text}`);
    total += Number(match[1]) * (units[match[2] ?? "s"] ?? 0);
    rest = rest.slice(match[0].length);
  }
  return total;
}

// ------------------------------------------------------------------------------------------
// Kubernetes manifests: every document of every deploy/k8s/*.yaml.
// ------------------------------------------------------------------------------------------

export interface Manifest {
  readonly file: string;
  readonly kind: string;
  readonly name: string;
  readonly doc: JsonObject;
}

export function loadK8sManifests(): Manifest[] {
  const dir = "deploy/k8s";
  const files = readdirSync(repoPath(dir))
    // kustomization.yaml lists these files; it is not itself a manifest (k8s-render.test.ts).
    .filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml")
    .sort();
  return files.flatMap((f) =>
    parseYamlDocuments(readRepoFile(`${dir}/${f}`))
      .filter((doc) => doc !== null)
      .map((doc) => {
        const object = asObject(doc, `${f} document`);
        return {
          file: f,
          kind: asString(object.kind, `${f} kind`),
          name: asString(at(object, "metadata", "name"), `${f} metadata.name`),
          doc: object,
        };
      }),
  );
}

export function manifest(all: readonly Manifest[], kind: string, name: string): JsonObject {
  const found = all.find((m) => m.kind === kind && m.name === name);
  if (found === undefined) throw new Error(`no ${kind} ${name} in deploy/k8s`);
  return found.doc;
}

/**
 * Variables the deployment artefacts set that are not broker configuration: read by Node
 * itself or by the AWS SDK's default credential chain. Everything else must be in envSchema.
 */
export const RUNTIME_VARIABLES: Readonly<Record<string, string>> = {
  NODE_EXTRA_CA_CERTS: "Node: extra CA roots (the dev stack's TLS edge)",
  AWS_ACCESS_KEY_ID: "AWS SDK credential chain (local-kms's dummy credentials)",
  AWS_SECRET_ACCESS_KEY: "AWS SDK credential chain (local-kms's dummy credentials)",
};
