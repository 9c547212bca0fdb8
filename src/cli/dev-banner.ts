import { DEV_USER } from "./dev-echo-seed.js";

/** What the running dev broker offers; the banner and `dev --json` print it. */
export interface DevEndpoints {
  readonly callerKey: string;
  readonly grpcPort: number;
  readonly connectPort: number | undefined;
  readonly adminPort: number | undefined;
  readonly metricsUrl: string | undefined;
  readonly echoSecretId: string;
  readonly echoPort: number;
}

/** The ready-to-paste commands, one per way in (also what `dev --json` reports). */
export function devCommands(d: DevEndpoints): Record<string, string> {
  const call = {
    secretId: d.echoSecretId,
    method: "GET",
    path: "/hello",
    query: [{ name: "from", value: "dev" }],
  };
  const auth = `-H "x-keybroker-key: $KEY" -H "authorization: Bearer $TOKEN"`;
  const commands: Record<string, string> = {
    env: `export KEY=${d.callerKey}\nexport TOKEN=$(npm run -s keybroker -- dev-token --sub ${DEV_USER})`,
    grpc:
      `npx buf curl --protocol grpc --http2-prior-knowledge ${auth} \\\n` +
      `  -d '${JSON.stringify(call)}' \\\n` +
      `  http://127.0.0.1:${d.grpcPort}/keybroker.v1.ProxyService/Call`,
    example: `BROKER_ADDRESS=127.0.0.1:${d.grpcPort} KEYBROKER_CALLER_KEY=$KEY PORT=3000 npm run example`,
  };
  if (d.connectPort !== undefined) {
    commands.connect =
      `curl -s -H 'content-type: application/json' ${auth} \\\n` +
      `  -d '${JSON.stringify(call)}' \\\n` +
      `  http://127.0.0.1:${d.connectPort}/keybroker.v1.ProxyService/Call`;
  }
  return commands;
}

const indent = (text: string, by: string) =>
  text
    .split("\n")
    .map((line) => `${by}${line}`)
    .join("\n");

export function devBanner(d: DevEndpoints): string {
  const line = "=".repeat(78);
  const c = devCommands(d);
  return `
${line}
  KEYBROKER DEV MODE — DEVELOPMENT ONLY. Local file keyring, embedded PGlite and a
  loopback token issuer: none of this is safe for real keys. Production: keybroker serve.
${line}
  gRPC            127.0.0.1:${d.grpcPort}   (grpc.health.v1 and reflection enabled)
  Connect/gRPC-Web ${d.connectPort === undefined ? "disabled" : `http://127.0.0.1:${d.connectPort}`}
  AdminService    ${d.adminPort === undefined ? "disabled" : `127.0.0.1:${d.adminPort}   (its own listener; admin keys: keybroker caller-keys)`}
  Metrics         ${d.metricsUrl ?? "disabled"}
  Echo provider   "dev-echo" -> http://127.0.0.1:${d.echoPort} (loopback, dev only); ${DEV_USER}'s secret ${d.echoSecretId}
  Dev caller key  ${d.callerKey}
                  (shown once; a new one is issued at every dev start)

  Get a user token:   npm run -s keybroker -- dev-token --sub ${DEV_USER}
  A ProxyService call, ready to paste (the echo answers with what it received, base64 in "body"):
${indent(c.env ?? "", "    ")}
${indent(c.grpc ?? "", "    ")}
${c.connect === undefined ? "" : `  The same call over Connect (curl):\n${indent(c.connect, "    ")}\n`}  Store a key of your own (SecretService.PutSecret):
    npx buf curl --protocol grpc --http2-prior-knowledge -H "x-keybroker-key: $KEY" -H "authorization: Bearer $TOKEN" \\
      -d '{"provider":"github","label":"my token","fields":{"token":"ghp_example"}}' \\
      http://127.0.0.1:${d.grpcPort}/keybroker.v1.SecretService/PutSecret
  The example app (examples/express-app):
${indent(c.example ?? "", "    ")}
${line}
`;
}
