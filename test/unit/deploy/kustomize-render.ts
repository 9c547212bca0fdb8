import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import {
  asArray,
  asObject,
  asString,
  at,
  isObject,
  type Json,
  type JsonObject,
  parseYamlDocuments,
  readRepoFile,
  repoPath,
} from "./deploy-files.js";

/**
 * Renders a kustomization the way `kubectl kustomize DIR` does, for the subset of Kustomize the
 * files in deploy/ use: `resources` (files and kustomization directories), `images` (by digest
 * or tag) and `patches` that are JSON 6902 operation lists with a kind/name target. Anything
 * else in a kustomization.yaml is refused, so a file using more than this renderer understands
 * fails here rather than being half-rendered. (No helm or kustomize binary installs from the
 * registries this project uses; where kubectl is present, `kubectl kustomize` renders the same.)
 */
export function renderKustomization(dir: string): JsonObject[] {
  const file = join(dir, "kustomization.yaml");
  const [doc] = parseYamlDocuments(readRepoFile(file));
  const k = asObject(doc ?? null, file);
  const known = new Set(["apiVersion", "kind", "resources", "images", "patches"]);
  const unknown = Object.keys(k).filter((key) => !known.has(key));
  if (unknown.length > 0) throw new Error(`${file}: unsupported fields ${unknown.join(", ")}`);
  if (k.kind !== "Kustomization") throw new Error(`${file}: kind must be Kustomization`);

  const objects: JsonObject[] = [];
  for (const entry of asArray(k.resources ?? [], `${file} resources`)) {
    const path = join(dir, asString(entry, "resource"));
    if (isDirectory(path)) {
      objects.push(...renderKustomization(path));
    } else {
      for (const d of parseYamlDocuments(readRepoFile(path))) {
        if (d !== null) objects.push(asObject(d, path));
      }
    }
  }
  for (const patch of asArray(k.patches ?? [], `${file} patches`)) {
    applyPatch(dir, asObject(patch, "patch"), objects);
  }
  for (const image of asArray(k.images ?? [], `${file} images`)) {
    setImage(asObject(image, "image"), objects);
  }
  return objects;
}

function isDirectory(relativePath: string): boolean {
  const absolute = repoPath(relativePath);
  return existsSync(absolute) && statSync(absolute).isDirectory();
}

function applyPatch(dir: string, patch: JsonObject, objects: JsonObject[]): void {
  const target = asObject(patch.target, "patch target");
  const source = asString(patch.path, "patch path (inline patches are not supported)");
  const operations = asArray(parseYamlDocuments(readRepoFile(join(dir, source)))[0] ?? null, source);
  const matches = objects.filter((o) => o.kind === target.kind && at(o, "metadata", "name") === target.name);
  if (matches.length !== 1) throw new Error(`${source}: target matches ${matches.length} objects`);
  const [object] = matches;
  for (const operation of operations)
    applyOperation(object as JsonObject, asObject(operation, source), source);
}

/** One RFC 6902 operation (add, remove, replace), in place. */
function applyOperation(document: JsonObject, operation: JsonObject, source: string): void {
  const op = asString(operation.op, "op");
  const tokens = asString(operation.path, "path")
    .split("/")
    .slice(1)
    .map((t) => t.replaceAll("~1", "/").replaceAll("~0", "~"));
  const last = tokens.pop();
  if (last === undefined) throw new Error(`${source}: empty path`);
  let parent: Json = document;
  for (const token of tokens) {
    const next: Json | undefined = Array.isArray(parent)
      ? parent[Number(token)]
      : isObject(parent)
        ? parent[token]
        : undefined;
    if (next === undefined) throw new Error(`${source}: ${operation.path} does not exist`);
    parent = next;
  }
  if (Array.isArray(parent)) {
    const index = last === "-" ? parent.length : Number(last);
    if (!Number.isInteger(index) || index < 0 || index > parent.length)
      throw new Error(`${source}: bad index ${last}`);
    if (op === "add") parent.splice(index, 0, operation.value ?? null);
    else if (op === "remove" && index < parent.length) parent.splice(index, 1);
    else if (op === "replace" && index < parent.length) parent[index] = operation.value ?? null;
    else throw new Error(`${source}: ${op} ${operation.path} cannot apply`);
    return;
  }
  if (!isObject(parent)) throw new Error(`${source}: ${operation.path} has no parent object`);
  if (op === "add") parent[last] = operation.value ?? null;
  else if ((op === "remove" || op === "replace") && last in parent) {
    if (op === "remove") delete parent[last];
    else parent[last] = operation.value ?? null;
  } else throw new Error(`${source}: ${op} ${operation.path} cannot apply`);
}

/** Kustomize's images transformer: every container whose image name matches gets the new one. */
function setImage(image: JsonObject, objects: JsonObject[]): void {
  const name = asString(image.name, "image name");
  const newName = typeof image.newName === "string" ? image.newName : name;
  const suffix =
    typeof image.digest === "string"
      ? `@${image.digest}`
      : typeof image.newTag === "string"
        ? `:${image.newTag}`
        : undefined;
  for (const container of containersOf(objects)) {
    const current = asString(container.image, "container image");
    const bare = current.replace(/@.*$/, "").replace(/:[^/:]*$/, "");
    if (bare !== name) continue;
    const kept = current.slice(bare.length);
    container.image = `${newName}${suffix ?? kept}`;
  }
}

/** Every container and init container of every workload (pod template or Job/CronJob). */
export function containersOf(objects: readonly JsonObject[]): JsonObject[] {
  return objects.flatMap((o) => {
    const spec = podSpecOf(o);
    if (spec === undefined) return [];
    return [
      ...asArray(spec.containers ?? [], "containers"),
      ...asArray(spec.initContainers ?? [], "initContainers"),
    ].map((c) => asObject(c, "container"));
  });
}

/** The pod spec of a workload, or undefined for other kinds. */
export function podSpecOf(object: JsonObject): JsonObject | undefined {
  const spec =
    object.kind === "CronJob"
      ? at(object, "spec", "jobTemplate", "spec", "template", "spec")
      : at(object, "spec", "template", "spec");
  return isObject(spec) ? spec : undefined;
}
