// Container health check: asks the broker's own grpc.health.v1 service, so "healthy" means the
// gRPC listener is up and the broker reports SERVING (it flips to NOT_SERVING while draining).
// Used by the image's HEALTHCHECK; Kubernetes uses its native `grpc:` probes instead.
// Exit status: 0 SERVING, 1 anything else (not listening, NOT_SERVING, timeout).
import { credentials, makeGenericClientConstructor } from "@grpc/grpc-js";
import { service } from "grpc-health-check";

const DEADLINE_MS = 3_000;
// The broker binds KEYBROKER_GRPC_HOST (default 127.0.0.1); a wildcard is reached on loopback.
// Plaintext only: with KEYBROKER_TLS_* set, probe /readyz on the ops port instead.
const WILDCARDS = new Set(["", "0.0.0.0", "::", "[::]"]);

const host = process.env.KEYBROKER_GRPC_HOST ?? "";
const port = process.env.KEYBROKER_GRPC_PORT ?? "50051";
const target = `${WILDCARDS.has(host) ? "127.0.0.1" : host}:${port}`;

const Health = makeGenericClientConstructor(service, "grpc.health.v1.Health");
const client = new Health(target, credentials.createInsecure());

client.check({ service: "" }, { deadline: Date.now() + DEADLINE_MS }, (err, response) => {
  const status = err ? `error: ${err.details || err.message}` : response.status;
  client.close();
  if (status === "SERVING") {
    process.exitCode = 0;
  } else {
    process.stderr.write(`keybroker health check: ${target} ${status}\n`);
    process.exitCode = 1;
  }
});
