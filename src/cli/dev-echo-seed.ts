import { randomBytes } from "node:crypto";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { type DevIssuerKey, signDevToken } from "../auth/dev-issuer.js";
import { SecretService } from "../gen/keybroker/v1/secrets_pb.js";
import { DEV_ECHO_PROVIDER_ID } from "./dev-echo-upstream.js";
import { DEV_AUDIENCE, DEV_PERMISSION } from "./dev-environment.js";

export const DEV_USER = "alice";
const DEV_ECHO_LABEL = "dev echo";

/**
 * The dev user's secret on the echo provider, so the banner's ProxyService call works as
 * printed. Stored the way an app would store it — PutSecret over gRPC with the dev caller key
 * and a dev token — so the seed is audited and sealed like any other; found again on restart.
 * Its token is a random placeholder: the echo upstream accepts any.
 */
export async function seedDevEchoSecret(options: {
  readonly grpcPort: number;
  readonly callerKey: string;
  readonly issuer: string;
  readonly issuerKey: DevIssuerKey;
}): Promise<string> {
  const baseUrl = `http://127.0.0.1:${options.grpcPort}`;
  const sessions = new Http2SessionManager(baseUrl);
  try {
    const client = createClient(SecretService, createGrpcTransport({ baseUrl, sessionManager: sessions }));
    const token = await signDevToken(options.issuerKey, {
      issuer: options.issuer,
      audience: DEV_AUDIENCE,
      subject: DEV_USER,
      permissions: [DEV_PERMISSION],
      expiresInSec: 60,
    });
    const headers = { "x-keybroker-key": options.callerKey, authorization: `Bearer ${token}` };
    const callOptions = { headers, timeoutMs: 10_000 };
    const { secrets } = await client.listSecrets({ provider: DEV_ECHO_PROVIDER_ID }, callOptions);
    const existing = secrets.find((s) => s.label === DEV_ECHO_LABEL);
    if (existing !== undefined) return existing.id;
    const { secret } = await client.putSecret(
      {
        provider: DEV_ECHO_PROVIDER_ID,
        label: DEV_ECHO_LABEL,
        fields: { token: `dev-echo-${randomBytes(12).toString("hex")}` },
      },
      callOptions,
    );
    if (secret === undefined) throw new Error("PutSecret answered no secret");
    return secret.id;
  } finally {
    sessions.abort();
  }
}
