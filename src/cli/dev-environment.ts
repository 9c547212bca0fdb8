import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { CliIo } from "./cli-io.js";

type Env = CliIo["env"];

export const DEV_AUDIENCE = "https://keybroker.dev/api";
export const DEV_PERMISSION = "keybroker:use";

/** Where `keybroker dev` keeps its DEV-ONLY state (git-ignored): KEYBROKER_DEV_DIR or .keybroker-dev. */
export function devDir(env: Env): string {
  return env.KEYBROKER_DEV_DIR ?? ".keybroker-dev";
}

export function devPath(env: Env, name: string): string {
  return join(devDir(env), name);
}

/** What `dev-token` needs to mint tokens the running dev broker accepts. */
export interface DevState {
  readonly issuer: string;
  readonly audience: string;
  readonly permission: string;
  readonly grpcPort: number;
  readonly connectPort: number | undefined;
}

export async function writeDevState(env: Env, state: DevState): Promise<void> {
  await writeFile(devPath(env, "dev.json"), `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
}

export async function readDevState(env: Env): Promise<DevState> {
  try {
    return JSON.parse(await readFile(devPath(env, "dev.json"), "utf8")) as DevState;
  } catch {
    throw new Error(`no dev state in ${devDir(env)}/: start the dev broker first (npm start)`);
  }
}

export function refuseProduction(command: string, env: Env): void {
  if (env.NODE_ENV === "production") {
    throw new Error(`${command} is development-only and refuses to run with NODE_ENV=production`);
  }
}
