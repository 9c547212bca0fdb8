import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { Server, ServerCredentials } from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import { afterEach, describe, expect, it } from "vitest";
import { readRepoFile, repoPath, repoRoot } from "./deploy-files.js";

interface Instruction {
  readonly keyword: string;
  readonly args: string;
}

interface Stage {
  readonly from: string;
  readonly name: string | undefined;
  readonly instructions: readonly Instruction[];
}

/** Dockerfile instructions with continuation lines joined and comments dropped. */
function parseDockerfile(text: string): { args: Map<string, string>; stages: Stage[] } {
  const logical: string[] = [];
  let pending = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (pending === "" && (line === "" || line.startsWith("#"))) continue;
    if (line.startsWith("#")) continue;
    if (line.endsWith("\\")) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    logical.push(`${pending}${line}`.trim());
    pending = "";
  }
  const args = new Map<string, string>();
  const stages: { from: string; name: string | undefined; instructions: Instruction[] }[] = [];
  for (const line of logical) {
    const space = line.indexOf(" ");
    const keyword = line.slice(0, space).toUpperCase();
    const rest = line.slice(space + 1).trim();
    if (keyword === "FROM") {
      const [image = "", as, name] = rest.split(/\s+/);
      stages.push({ from: image, name: as?.toUpperCase() === "AS" ? name : undefined, instructions: [] });
    } else if (stages.length === 0 && keyword === "ARG") {
      const [key = "", value = ""] = rest.split("=");
      args.set(key, value);
    } else {
      stages.at(-1)?.instructions.push({ keyword, args: rest });
    }
  }
  return { args, stages };
}

const dockerfile = parseDockerfile(readRepoFile("Dockerfile"));
const runtime = dockerfile.stages.at(-1);

function instructions(stage: Stage | undefined, keyword: string): string[] {
  return (stage?.instructions ?? []).filter((i) => i.keyword === keyword).map((i) => i.args);
}

function resolveImage(from: string): string {
  return from.replace(/\$\{(\w+)\}/g, (_, name: string) => dockerfile.args.get(name) ?? "");
}

/** COPY sources taken from the build context (not --from another stage). */
function contextCopies(): { sources: string[]; stage: string }[] {
  return dockerfile.stages.flatMap((stage) =>
    instructions(stage, "COPY")
      .filter((args) => !args.startsWith("--from="))
      .map((args) => ({ sources: args.split(/\s+/).slice(0, -1), stage: stage.name ?? stage.from })),
  );
}

/**
 * Whether .dockerignore lets `path` into the build context: the last matching rule wins, and a
 * rule matches a path or anything below it. Enough for the allowlist form this file uses.
 */
function inBuildContext(path: string): boolean {
  const rules = readRepoFile(".dockerignore")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));
  let included = true;
  for (const rule of rules) {
    const exception = rule.startsWith("!");
    const pattern = exception ? rule.slice(1) : rule;
    const regex = new RegExp(`^${pattern.replaceAll(".", "\\.").replaceAll("*", "[^/]*")}(/.*)?$`);
    if (regex.test(path)) included = exception;
  }
  return included;
}

describe("Dockerfile", () => {
  it("builds with dev dependencies in one stage and installs only production dependencies for runtime", () => {
    const build = dockerfile.stages.find((s) =>
      instructions(s, "RUN").some((r) => r.includes("npm run build")),
    );
    expect(instructions(build, "RUN").some((r) => /npm ci(?!.*--omit=dev)/.test(r))).toBe(true);
    const prod = dockerfile.stages.find((s) =>
      instructions(s, "RUN").some((r) => r.includes("npm ci --omit=dev")),
    );
    expect(prod?.name).toBeDefined();
    expect(instructions(runtime, "COPY")).toContain(`--from=${prod?.name} /app/node_modules ./node_modules`);
    expect(instructions(runtime, "COPY")).toContain(`--from=${build?.name} /app/dist ./dist`);
    expect(instructions(runtime, "RUN").join(" ")).not.toMatch(/npm (ci|install)/);
  });

  it("runs on the project's Node release, a slim base, in every stage", () => {
    const node = (JSON.parse(readRepoFile("package.json")) as { devDependencies: Record<string, string> })
      .devDependencies.node;
    for (const stage of dockerfile.stages) {
      expect(resolveImage(stage.from)).toMatch(
        new RegExp(`^node:${node?.replaceAll(".", "\\.")}-slim(@sha256:[0-9a-f]{64})?$`),
      );
    }
  });

  it("K239 installs production dependencies without dev or optional ones, so PGlite is not in the image", () => {
    const prod = dockerfile.stages.find((s) => instructions(s, "RUN").some((r) => r.includes("--omit=dev")));
    const install = instructions(prod, "RUN").find((r) => r.includes("npm ci")) ?? "";
    expect(install).toContain("--omit=optional");
    expect(install).toContain("--ignore-scripts");
    const pkg = JSON.parse(readRepoFile("package.json")) as Record<string, Record<string, string>>;
    for (const embedded of ["@electric-sql/pglite", "kysely-pglite-dialect"]) {
      expect(pkg.optionalDependencies?.[embedded], embedded).toBeDefined();
      expect(pkg.dependencies?.[embedded], embedded).toBeUndefined();
    }
  });

  it("runs as a numeric, non-root user", () => {
    const [user] = instructions(runtime, "USER");
    expect(user).toMatch(/^\d+(:\d+)?$/);
    expect(Number(user?.split(":")[0])).toBeGreaterThan(0);
  });

  it("starts the CLI with `serve` unless another command is given", () => {
    expect(instructions(runtime, "ENTRYPOINT").map((e) => JSON.parse(e))).toEqual([
      ["node", "bin/keybroker.js"],
    ]);
    expect(instructions(runtime, "CMD").map((c) => JSON.parse(c))).toEqual([["serve"]]);
  });

  it("checks health with deploy/healthcheck.mjs, which the runtime stage ships", () => {
    const [healthcheck = ""] = instructions(runtime, "HEALTHCHECK");
    const command = JSON.parse(healthcheck.slice(healthcheck.indexOf("CMD ") + 4)) as string[];
    const [workdir] = instructions(runtime, "WORKDIR");
    expect(command).toEqual(["node", `${workdir}/deploy/healthcheck.mjs`]);
    expect(instructions(runtime, "COPY")).toContain("deploy/healthcheck.mjs ./deploy/healthcheck.mjs");
  });

  it("ships what the CLI reads at run time: bin/, the compiled code and the provider registry", () => {
    const copies = instructions(runtime, "COPY");
    for (const needed of ["bin ./bin", "providers ./providers", "package.json ./"]) {
      expect(copies).toContain(needed);
    }
  });

  it("copies only files that exist and that .dockerignore lets into the build context", () => {
    const sources = contextCopies().flatMap((c) => c.sources);
    expect(sources.length).toBeGreaterThan(0);
    for (const source of sources) {
      expect(existsSync(repoPath(source)), `${source} exists`).toBe(true);
      expect(inBuildContext(source), `${source} is in the build context`).toBe(true);
    }
  });

  it("keeps secrets, local state and build output out of the build context", () => {
    for (const path of [
      ".env",
      ".env.production",
      ".keybroker-dev/keyring.json",
      ".git/config",
      "node_modules/pg/package.json",
      "dist/src/cli/main.js",
      "coverage/index.html",
    ]) {
      expect(inBuildContext(path), path).toBe(false);
    }
  });
});

describe("deploy/healthcheck.mjs", () => {
  let server: Server | undefined;

  afterEach(async () => {
    await new Promise<void>((resolve) =>
      server === undefined ? resolve() : server.tryShutdown(() => resolve()),
    );
    server = undefined;
  });

  async function startHealthServer(status: "SERVING" | "NOT_SERVING"): Promise<number> {
    const s = new Server();
    new HealthImplementation({ "": status }).addToServer(s);
    server = s;
    return new Promise((resolve, reject) =>
      s.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, port) =>
        err ? reject(err) : resolve(port),
      ),
    );
  }

  function runHealthcheck(port: number): Promise<number | null> {
    return new Promise((resolve) => {
      const child = spawn(process.execPath, [repoPath("deploy/healthcheck.mjs")], {
        cwd: repoRoot,
        env: { ...process.env, KEYBROKER_GRPC_HOST: "0.0.0.0", KEYBROKER_GRPC_PORT: String(port) },
        stdio: "ignore",
      });
      child.on("exit", (code) => resolve(code));
    });
  }

  it("exits 0 when the broker reports SERVING", async () => {
    expect(await runHealthcheck(await startHealthServer("SERVING"))).toBe(0);
  });

  it("exits 1 when the broker reports NOT_SERVING (draining)", async () => {
    expect(await runHealthcheck(await startHealthServer("NOT_SERVING"))).toBe(1);
  });

  it("exits 1 when nothing listens on the gRPC port", async () => {
    const port = await startHealthServer("SERVING");
    await new Promise<void>((resolve) => server?.tryShutdown(() => resolve()));
    server = undefined;
    expect(await runHealthcheck(port)).toBe(1);
  });
});
