/**
 * A stand-in for the main app: an Express API that a logged-in SPA calls with the user's
 * Auth0 access token, and that uses Keybroker to store the user's API keys and call providers
 * with them. It never sees a stored key after the user pasted it, and never keeps the token.
 *
 *   BROKER_ADDRESS=127.0.0.1:50051 KEYBROKER_CALLER_KEY=... PORT=3000 npx tsx examples/express-app/app.ts
 */
import { realpathSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { pathToFileURL } from "node:url";
import express, {
  type ErrorRequestHandler,
  type Express,
  type Request,
  type RequestHandler,
  type Response,
} from "express";
import { z } from "zod";
import {
  AlreadyExistsError,
  type CallResponse,
  createKeybrokerClient,
  DataLossError,
  DeadlineExceededError,
  FailedPreconditionError,
  InvalidArgumentError,
  type KeybrokerClient,
  KeybrokerError,
  NotFoundError,
  PermissionDeniedError,
  ResourceExhaustedError,
  type SecretInfo,
  UnauthenticatedError,
  UnavailableError,
} from "../../client/keybroker-client.js";

export interface ExampleAppDeps {
  readonly broker: KeybrokerClient;
  /**
   * Optional check of the token by the app itself (e.g. its own Auth0 middleware); false
   * answers 401 without calling the broker. The broker verifies the token on every call anyway.
   */
  readonly verifyUser?: (accessToken: string) => Promise<boolean>;
  /** Where server-side failures are reported (one line each, no secrets); default console.error. */
  readonly logError?: (line: string) => void;
}

const ConnectBody = z.object({
  provider: z.string(),
  label: z.string(),
  fields: z.record(z.string(), z.string()),
});

const CallBody = z.object({
  method: z.string(),
  path: z.string(),
  query: z.record(z.string(), z.string()).optional(),
});

export function createExampleApp(deps: ExampleAppDeps): Express {
  const { broker } = deps;
  const app = express();
  app.disable("x-powered-by");
  app.use(express.json({ limit: "64kb" }));
  app.use("/connections", requireUserToken(deps.verifyUser));

  app.post("/connections", async (req, res) => {
    const body = parseBody(ConnectBody, req, "{ provider, label, fields }");
    const secret = await broker.putSecret(userTokenOf(res), body, callOptionsOf(res));
    res.status(201).json(connectionOf(secret));
  });

  app.get("/connections", async (req, res) => {
    const provider = typeof req.query.provider === "string" ? req.query.provider : undefined;
    const secrets = await broker.listSecrets(
      userTokenOf(res),
      provider === undefined ? {} : { provider },
      callOptionsOf(res),
    );
    res.json({ connections: secrets.map(connectionOf) });
  });

  app.delete("/connections/:id", async (req, res) => {
    await broker.deleteSecret(userTokenOf(res), req.params.id, callOptionsOf(res));
    res.status(204).end();
  });

  app.post("/connections/:id/call", async (req, res) => {
    const body = parseBody(CallBody, req, "{ method, path, query? }");
    const response = await broker.call(
      userTokenOf(res),
      {
        secretId: req.params.id,
        method: body.method,
        path: body.path,
        query: Object.entries(body.query ?? {}).map(([name, value]) => ({ name, value })),
      },
      callOptionsOf(res),
    );
    // Always 200 with the provider's status inside: an upstream 401 passed through as our own
    // would look to the SPA like the user's session ended.
    res.json(providerResponseOf(response));
  });

  app.use(errorSender(deps.logError ?? console.error));
  return app;
}

/**
 * Takes the user's access token from `Authorization: Bearer`. The app checks presence only
 * (plus `verifyUser` if given): the broker validates issuer, audience, expiry and signature on
 * every call, so a forged or expired token fails there with 401 all the same.
 */
function requireUserToken(verifyUser: ExampleAppDeps["verifyUser"]): RequestHandler {
  return async (req, res, next) => {
    const match = /^Bearer ([!-~]+)$/i.exec(req.get("authorization") ?? "");
    const token = match?.[1];
    if (token === undefined || (verifyUser !== undefined && !(await verifyUser(token)))) {
      res.set("www-authenticate", "Bearer").status(401).json({ error: "sign in required" });
      return;
    }
    res.locals.userToken = token;
    // DPoP (issue 14): the browser mints one proof per action with its non-extractable key, for
    // the broker RPC this route makes; the app only forwards it (see README: it cannot mint one).
    const proof = req.get(DPOP_FORWARD_HEADER);
    if (proof !== undefined) res.locals.dpopProof = proof;
    next();
  };
}

/** The header the browser puts its DPoP proof in; forwarded to the broker as `dpop`. */
export const DPOP_FORWARD_HEADER = "keybroker-dpop";

function callOptionsOf(res: Response): { dpopProof?: string } {
  const proof: unknown = res.locals.dpopProof;
  return typeof proof === "string" ? { dpopProof: proof } : {};
}

function userTokenOf(res: Response): string {
  const token: unknown = res.locals.userToken;
  if (typeof token !== "string") throw new Error("route mounted without requireUserToken");
  return token;
}

/** A client-side 400 for a body of the wrong shape; only the expected shape is echoed, never the body. */
class BadRequest extends Error {}

function parseBody<T>(schema: z.ZodType<T>, req: Request, shape: string): T {
  const parsed = schema.safeParse(req.body);
  if (!parsed.success) throw new BadRequest(`body must be ${shape}`);
  return parsed.data;
}

/** What the SPA sees of a stored key: the broker's metadata, which never includes the key. */
function connectionOf(secret: SecretInfo) {
  return {
    id: secret.id,
    provider: secret.provider,
    label: secret.label,
    version: secret.version,
    fieldNames: secret.fieldNames,
    hint: secret.hint,
    createdAt: secret.createdAt?.toISOString(),
    lastUsedAt: secret.lastUsedAt?.toISOString(),
  };
}

function providerResponseOf(response: CallResponse) {
  const contentType = response.headers.find((h) => h.name.toLowerCase() === "content-type")?.value ?? "";
  const text = Buffer.from(response.body).toString("utf8");
  return { status: response.status, contentType, body: contentType.includes("json") ? jsonOr(text) : text };
}

function jsonOr(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/**
 * One place that turns a failure into an HTTP answer. Texts are fixed per kind, except for
 * INVALID_ARGUMENT, whose broker text describes the request (field names, never values) and
 * helps the user fix it. The request id lets support find the broker's log line.
 */
function errorSender(logError: (line: string) => void): ErrorRequestHandler {
  return (err: unknown, _req, res, _next) => {
    const { status, message } = httpErrorOf(err);
    const requestId = err instanceof KeybrokerError ? err.requestId : undefined;
    if (status >= 500) logError(`example app: answered ${status} after ${describeError(err)}`);
    res.status(status).json(requestId === undefined ? { error: message } : { error: message, requestId });
  };
}

/** Name, code and request id only: an arbitrary error's message could hold anything. */
function describeError(err: unknown): string {
  if (err instanceof UnauthenticatedError) {
    return `${err.name} (${err.credential} refused) request ${err.requestId ?? "-"}`;
  }
  if (err instanceof KeybrokerError) return `${err.name} (${err.code}) request ${err.requestId ?? "-"}`;
  return err instanceof Error ? err.name : typeof err;
}

function httpErrorOf(err: unknown): { status: number; message: string } {
  if (err instanceof BadRequest) return { status: 400, message: err.message };
  if (err instanceof InvalidArgumentError || err instanceof FailedPreconditionError) {
    return { status: 400, message: err.message };
  }
  if (err instanceof UnauthenticatedError) {
    // A DPoP refusal: the browser should mint a fresh proof for this action (not sign in again).
    if (err.reason?.startsWith("dpop_") === true) {
      return { status: 401, message: "DPoP proof refused: mint a new one for this action" };
    }
    // Our own caller key refused is an ops problem: logging the user out would not fix it.
    return err.credential === "user_token"
      ? { status: 401, message: "sign in required" }
      : { status: 500, message: "internal error" };
  }
  if (err instanceof PermissionDeniedError) return { status: 403, message: "not allowed" };
  if (err instanceof NotFoundError) return { status: 404, message: "connection not found" };
  if (err instanceof AlreadyExistsError) {
    return { status: 409, message: "a connection with this label already exists" };
  }
  if (err instanceof ResourceExhaustedError)
    return { status: 429, message: "limit reached, try again later" };
  if (err instanceof UnavailableError)
    return { status: 503, message: "temporarily unavailable, try again later" };
  if (err instanceof DeadlineExceededError) {
    // For a POST the provider may have acted: say so rather than invite a blind retry.
    return {
      status: 504,
      message: "the provider did not answer in time; the request may have been carried out",
    };
  }
  if (err instanceof DataLossError) return { status: 500, message: "internal error" };
  if (isBodyParserError(err)) return { status: err.status, message: "malformed request body" };
  return { status: 500, message: "internal error" };
}

/** express.json() failures (bad JSON, too large) carry a 4xx `status`. */
function isBodyParserError(err: unknown): err is { status: number } {
  const status = (err as { status?: unknown } | null)?.status;
  return typeof status === "number" && status >= 400 && status < 500;
}

/** Reads the example's settings, listing every missing one at once; never prints their values. */
export function readExampleEnv(env: NodeJS.ProcessEnv): { address: string; callerKey: string; port: number } {
  const missing = ["BROKER_ADDRESS", "KEYBROKER_CALLER_KEY"].filter((name) => !env[name]);
  if (missing.length > 0) throw new Error(`missing environment variables: ${missing.join(", ")}`);
  const port = Number(env.PORT ?? "3000");
  if (!Number.isInteger(port) || port < 0 || port > 65_535) throw new Error("PORT must be a port number");
  return { address: env.BROKER_ADDRESS ?? "", callerKey: env.KEYBROKER_CALLER_KEY ?? "", port };
}

async function main(): Promise<void> {
  const env = readExampleEnv(process.env);
  const broker = createKeybrokerClient({ address: env.address, callerKey: env.callerKey });
  const server = createExampleApp({ broker }).listen(env.port, "127.0.0.1");
  await new Promise<void>((resolve, reject) => {
    server.once("listening", resolve).once("error", reject);
  });
  const { port } = server.address() as AddressInfo;
  console.log(`example app listening on http://127.0.0.1:${port}`);
  const stop = (): void => {
    server.close();
    broker.close();
  };
  process.once("SIGINT", stop).once("SIGTERM", stop);
}

// Only when run as a script: importing the module (tests, other code) must not start a server.
if (isEntryPoint(import.meta.url)) {
  main().catch((err: unknown) => {
    console.error(`example app: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  });
}

function isEntryPoint(moduleUrl: string): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return moduleUrl === pathToFileURL(realpathSync(script)).href;
  } catch {
    return false;
  }
}
