import type { UserCallGuard } from "../auth/user-call-guard.js";
import type { ProxyService as ProxyServiceDesc } from "../gen/keybroker/v1/proxy_pb.js";
import { parseProxyCall } from "../proxy/proxy-input.js";
import type { ProxyService } from "../proxy/proxy-service.js";
import type { ServiceHandlers } from "./handlers.js";

const toHeaders = (headers: ReadonlyArray<readonly [string, string]>) =>
  headers.map(([name, value]) => ({ name, value }));

/** Thin handlers: authorize (proxy:call + the user's live token), parse, delegate, convert. */
export function createProxyServiceHandlers(deps: {
  guard: UserCallGuard;
  proxy: ProxyService;
}): ServiceHandlers<typeof ProxyServiceDesc> {
  const { guard, proxy } = deps;
  return {
    async call(request, ctx) {
      const { user } = await guard.authorize(ctx, "proxy:call");
      const response = await proxy.call(user, parseProxyCall(request), ctx.signal);
      return { status: response.status, headers: toHeaders(response.headers), body: response.body };
    },
    async *callStream(request, ctx) {
      const { user } = await guard.authorize(ctx, "proxy:call");
      const response = await proxy.callStream(user, parseProxyCall(request), ctx.signal);
      yield {
        part: { case: "head", value: { status: response.status, headers: toHeaders(response.headers) } },
      };
      for await (const chunk of response.body) {
        yield { part: { case: "chunk", value: chunk } };
      }
    },
  };
}
