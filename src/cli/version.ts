import { readFileSync } from "node:fs";

/** package.json at the package root (from src/cli/ in a checkout, dist/src/cli/ in the image). */
const PACKAGE_JSON = new URL(
  import.meta.url.includes("/dist/") ? "../../../package.json" : "../../package.json",
  import.meta.url,
);

/** The version the package was released as; read once, when asked. */
export function keybrokerVersion(): string {
  const parsed = JSON.parse(readFileSync(PACKAGE_JSON, "utf8")) as { version?: unknown };
  return typeof parsed.version === "string" ? parsed.version : "unknown";
}
