import type http from "node:http";
import type http2 from "node:http2";
import type { Logger } from "../../log/logger.js";

/** How a form route answers: 200 with an empty body, or an OAuth-style error (RFC 6749 §5.2). */
export type FormPostAnswer =
  | { readonly status: 200 }
  | { readonly status: 400 | 404 | 503; readonly error: string; readonly description: string };

/** A plain HTTP POST route (application/x-www-form-urlencoded) beside the RPCs on the Connect port. */
export interface FormPostRoute {
  /** Exact request path, e.g. "/oidc/backchannel-logout". */
  readonly path: string;
  accept(form: URLSearchParams): Promise<FormPostAnswer>;
}

// A logout token is a few hundred bytes; anything near this is not one.
const MAX_BODY_BYTES = 16 * 1024;
const FORM_TYPE = "application/x-www-form-urlencoded";

type Request = http.IncomingMessage | http2.Http2ServerRequest;
type Response = http.ServerResponse | http2.Http2ServerResponse;

/** The route for this request's path, if any (the query string is ignored). */
export function formRouteFor(routes: readonly FormPostRoute[], req: Request): FormPostRoute | undefined {
  if (routes.length === 0) return undefined;
  const path = (req.url ?? "").split("?", 1)[0];
  return routes.find((r) => r.path === path);
}

/**
 * Reads a bounded urlencoded body and answers as the route says. Only POST with the form content
 * type; the body is parsed, never logged. Answers carry `Cache-Control: no-store` (OIDC
 * Back-Channel Logout 1.0 §2.8).
 */
export function serveFormPost(route: FormPostRoute, req: Request, res: Response, logger: Logger): void {
  if (req.method !== "POST") {
    answer(res, 405, { error: "invalid_request", error_description: "POST only" }, { allow: "POST" });
    req.resume();
    return;
  }
  const type = (req.headers["content-type"] ?? "").split(";", 1)[0]?.trim().toLowerCase();
  if (type !== FORM_TYPE) {
    answer(res, 400, { error: "invalid_request", error_description: `content type must be ${FORM_TYPE}` });
    req.resume();
    return;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  let tooLarge = false;
  req.on("data", (chunk: Buffer) => {
    if (tooLarge) return;
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      tooLarge = true;
      answer(res, 400, { error: "invalid_request", error_description: "request body too large" });
      return;
    }
    chunks.push(chunk);
  });
  req.on("error", () => undefined); // a client that goes away has nothing to be answered
  req.on("end", () => {
    if (tooLarge) return;
    const form = new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
    route.accept(form).then(
      (result) =>
        result.status === 200
          ? answer(res, 200, undefined)
          : answer(res, result.status, { error: result.error, error_description: result.description }),
      (err: unknown) => {
        logger.error({ err }, "form route failed");
        answer(res, 500, { error: "server_error", error_description: "internal error" });
      },
    );
  });
}

function answer(
  res: Response,
  status: number,
  body: { error: string; error_description: string } | undefined,
  extra: Record<string, string> = {},
): void {
  if (res.headersSent) return;
  const headers: Record<string, string> = { "cache-control": "no-store", ...extra };
  if (body === undefined) {
    (res as http.ServerResponse).writeHead(status, headers);
    res.end();
    return;
  }
  const json = JSON.stringify(body);
  (res as http.ServerResponse).writeHead(status, { ...headers, "content-type": "application/json" });
  res.end(json);
}
