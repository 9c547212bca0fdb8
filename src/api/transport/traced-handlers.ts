import type { DescMessage, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import type { Tracing } from "../../observability/tracing.js";
import type { CallContext } from "./call-context.js";
import type { AnyHandler, ServerStreamingHandler, ServiceRegistration, UnaryHandler } from "./handlers.js";

/**
 * The same services with each call inside a SERVER span that continues the caller's trace (W3C
 * `traceparent` metadata). Applied by the composition root only when tracing is on, so with it
 * off the transports call the handlers directly. The span is named by the route and ends with
 * the handler; it records the broker error code of a failure, never the request or its message.
 */
export function tracedRegistrations(
  registrations: readonly ServiceRegistration[],
  tracing: Tracing,
): ServiceRegistration[] {
  return registrations.map((registration) => {
    const handlers: Record<string, AnyHandler> = {};
    for (const method of registration.service.methods) {
      const handler = registration.handlers[method.localName];
      if (handler === undefined) continue;
      const route = { service: registration.service.typeName, method: method.name };
      handlers[method.localName] =
        method.methodKind === "unary"
          ? tracedUnary(route, handler as UnaryHandler<DescMessage, DescMessage>, tracing)
          : tracedStream(route, handler as ServerStreamingHandler<DescMessage, DescMessage>, tracing);
    }
    return { service: registration.service, handlers: Object.freeze(handlers) };
  });
}

interface Route {
  readonly service: string;
  readonly method: string;
}

function tracedUnary(
  route: Route,
  handler: UnaryHandler<DescMessage, DescMessage>,
  tracing: Tracing,
): UnaryHandler<DescMessage, DescMessage> {
  return async (request, ctx) => {
    const span = tracing.startServerSpan(route.service, route.method, ctx.traceparent);
    try {
      const response = await span.run(() => handler(request, ctx));
      span.end();
      return response;
    } catch (err) {
      span.end(err);
      throw err;
    }
  };
}

function tracedStream(
  route: Route,
  handler: ServerStreamingHandler<DescMessage, DescMessage>,
  tracing: Tracing,
): ServerStreamingHandler<DescMessage, DescMessage> {
  // Each step of the handler's iterator runs inside the span, so its spans are children.
  return async function* (
    request: MessageShape<DescMessage>,
    ctx: CallContext,
  ): AsyncGenerator<MessageInitShape<DescMessage>> {
    const span = tracing.startServerSpan(route.service, route.method, ctx.traceparent);
    const iterator = span.run(() => handler(request, ctx)[Symbol.asyncIterator]());
    let failure: unknown;
    let finished = false;
    try {
      for (;;) {
        const step = await span.run(() => iterator.next());
        if (step.done === true) {
          finished = true;
          return;
        }
        yield step.value;
      }
    } catch (err) {
      failure = err;
      finished = true;
      throw err;
    } finally {
      // The consumer stopped early (client gone): let the handler run its own cleanup.
      if (!finished && iterator.return !== undefined) {
        await span.run(() => iterator.return?.())?.catch(() => undefined);
      }
      span.end(failure);
    }
  };
}
