import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

/** Where `keybroker dev` keeps its DEV-ONLY state (git-ignored). */
export const DEV_DIR = process.env.KEYBROKER_DEV_DIR ?? ".keybroker-dev";
export const DEV_AUDIENCE = "https://keybroker.dev/api";
export const DEV_PERMISSION = "keybroker:use";

/** What `dev-token` needs to mint tokens the running dev broker accepts. */
export interface DevState {
  readonly issuer: string;
  readonly audience: string;
  readonly permission: string;
  readonly grpcPort: number;
  readonly connectPort: number | undefined;
}

export function devPath(name: string): string {
  return join(DEV_DIR, name);
}

export async function writeDevState(state: DevState): Promise<void> {
  await writeFile(devPath("dev.json"), `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
}

export async function readDevState(): Promise<DevState> {
  try {
    return JSON.parse(await readFile(devPath("dev.json"), "utf8")) as DevState;
  } catch {
    throw new Error(`no dev state in ${DEV_DIR}/: start the dev broker first (npm start)`);
  }
}

export function refuseProduction(command: string, env: Readonly<Record<string, string | undefined>>): void {
  if (env.NODE_ENV === "production") {
    throw new Error(`${command} is development-only and refuses to run with NODE_ENV=production`);
  }
}
