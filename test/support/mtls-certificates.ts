import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A client certificate as PEM text, and where its files are. */
export interface ClientCertificate {
  readonly cert: string;
  readonly key: string;
  readonly certFile: string;
}

/**
 * Throwaway PKI for mTLS tests (catalogue B22), made with the openssl CLI at test time: one CA
 * that signs the server certificate (127.0.0.1) and the clients `alice` and `bob`, the same CA's
 * `expired` client (valid only in January 2020), and `foreign`, a client of another CA.
 */
export interface MtlsCertificates {
  readonly dir: string;
  /** PEM of the CA: the client CA bundle on the server, the trusted root on clients. */
  readonly ca: string;
  readonly caFile: string;
  readonly caKeyFile: string;
  readonly serverCertFile: string;
  readonly serverKeyFile: string;
  readonly alice: ClientCertificate;
  readonly bob: ClientCertificate;
  readonly expired: ClientCertificate;
  readonly foreign: ClientCertificate;
  /** Deletes the files. */
  remove(): void;
}

const EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
const CLIENT_EXTENSIONS = [
  "basicConstraints=CA:FALSE",
  "keyUsage=critical,digitalSignature",
  "extendedKeyUsage=clientAuth",
].join("\n");

export function createMtlsCertificates(): MtlsCertificates {
  const dir = mkdtempSync(join(tmpdir(), "keybroker-mtls-"));
  const run = (...args: string[]): void => {
    execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  };
  const file = (name: string): string => join(dir, name);
  const read = (name: string): string => readFileSync(file(name), "utf8");

  function authority(name: string): void {
    run(
      "req",
      "-x509",
      ...EC_KEY,
      "-keyout",
      `${name}.key`,
      "-out",
      `${name}.crt`,
      "-days",
      "2",
      "-subj",
      `/CN=keybroker ${name}`,
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    );
  }

  function signed(name: string, ca: string, extensions: string): void {
    run("req", ...EC_KEY, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`);
    writeFileSync(file(`${name}.ext`), extensions);
    run(
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      `${ca}.crt`,
      "-CAkey",
      `${ca}.key`,
      "-set_serial",
      `0x${randomBytes(8).toString("hex")}`,
      "-out",
      `${name}.crt`,
      "-days",
      "2",
      "-extfile",
      `${name}.ext`,
    );
  }

  // `openssl x509 -req` only dates certificates from now; `openssl ca` takes explicit dates.
  function expiredClient(name: string, ca: string): void {
    run("req", ...EC_KEY, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`);
    writeFileSync(file(`${name}.ext`), CLIENT_EXTENSIONS);
    writeFileSync(file("index.txt"), "");
    writeFileSync(
      file("ca.cnf"),
      [
        "[ca]",
        "default_ca = test_ca",
        "[test_ca]",
        `database = ${file("index.txt")}`,
        `serial = ${file("serial.txt")}`,
        `new_certs_dir = ${dir}`,
        "default_md = sha256",
        "policy = any",
        "unique_subject = no",
        "[any]",
        "commonName = supplied",
      ].join("\n"),
    );
    run(
      "ca",
      "-batch",
      "-config",
      "ca.cnf",
      "-rand_serial",
      "-notext",
      "-cert",
      `${ca}.crt`,
      "-keyfile",
      `${ca}.key`,
      "-in",
      `${name}.csr`,
      "-out",
      `${name}.crt`,
      "-extfile",
      `${name}.ext`,
      "-startdate",
      "20200101000000Z",
      "-enddate",
      "20200102000000Z",
    );
  }

  const client = (name: string): ClientCertificate => ({
    cert: read(`${name}.crt`),
    key: read(`${name}.key`),
    certFile: file(`${name}.crt`),
  });

  try {
    authority("ca");
    authority("other-ca");
    signed(
      "server",
      "ca",
      [
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "basicConstraints=CA:FALSE",
        "keyUsage=critical,digitalSignature",
        "extendedKeyUsage=serverAuth",
      ].join("\n"),
    );
    signed("alice", "ca", CLIENT_EXTENSIONS);
    signed("bob", "ca", CLIENT_EXTENSIONS);
    signed("foreign", "other-ca", CLIENT_EXTENSIONS);
    expiredClient("expired", "ca");
    return {
      dir,
      ca: read("ca.crt"),
      caFile: file("ca.crt"),
      caKeyFile: file("ca.key"),
      serverCertFile: file("server.crt"),
      serverKeyFile: file("server.key"),
      alice: client("alice"),
      bob: client("bob"),
      expired: client("expired"),
      foreign: client("foreign"),
      remove: () => rmSync(dir, { recursive: true, force: true }),
    };
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
