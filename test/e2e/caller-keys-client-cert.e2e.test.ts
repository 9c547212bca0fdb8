import { execFile, execFileSync } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMtlsCertificates, type MtlsCertificates } from "../support/mtls-certificates.js";

const run = promisify(execFile);
const BIN = new URL("../../bin/keybroker.js", import.meta.url).pathname;

/** `keybroker caller-keys create --client-cert`, run as the operator runs it (catalogue B22). */
describe("keybroker caller-keys with a client certificate", () => {
  let certs: MtlsCertificates;
  const env = () => ({
    PATH: process.env.PATH ?? "",
    HOME: process.env.HOME ?? "",
    KEYBROKER_ALLOW_EMBEDDED_DATABASE: "1",
    KEYBROKER_PGLITE_DIR: join(certs.dir, "pgdata"),
  });
  const cli = (...args: string[]) => run(process.execPath, [BIN, ...args], { env: env() });
  const create = (name: string, certFile: string) =>
    cli("caller-keys", "create", "--name", name, "--scopes", "secrets:read", "--client-cert", certFile);
  /** The fingerprint in the notation operators get from openssl. */
  const opensslFingerprint = (certFile: string) =>
    /=([0-9A-F:]+)/.exec(
      execFileSync("openssl", ["x509", "-noout", "-fingerprint", "-sha256", "-in", certFile], {
        encoding: "utf8",
      }),
    )?.[1] ?? "";

  beforeAll(async () => {
    certs = createMtlsCertificates();
    await cli("migrate");
  }, 180_000);

  afterAll(() => certs?.remove());

  it("B22 binds the new key to the certificate's SHA-256, shown as openssl shows it", async () => {
    const fingerprint = opensslFingerprint(certs.alice.certFile);
    expect(fingerprint).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    const created = await create("alice-app", certs.alice.certFile);
    expect(created.stdout.split("\n")[0]).toMatch(/^kbk_/);
    expect(created.stdout).toContain(`client-cert=sha256:${fingerprint}`);
    const list = await cli("caller-keys", "list");
    expect(list.stdout).toMatch(new RegExp(`\\talice-app\\t.*\\tclient-cert=sha256:${fingerprint}\\n`));
  }, 60_000);

  it("B22 refuses a CA certificate, an expired certificate or an unreadable file, creating no key", async () => {
    const attempts = [
      [certs.caFile, "is a CA certificate"],
      [certs.expired.certFile, "has expired"],
      [join(certs.dir, "missing.pem"), "--client-cert: cannot read"],
    ] as const;
    for (const [file, message] of attempts) {
      const failure = await create("refused-app", file).then(
        () => undefined,
        (err: { code?: number; stderr?: string }) => err,
      );
      expect(failure?.code).toBe(1);
      expect(failure?.stderr).toContain(message);
    }
    expect((await cli("caller-keys", "list")).stdout).not.toContain("refused-app");
  }, 60_000);
});
