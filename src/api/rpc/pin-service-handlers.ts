import type { PinService } from "../../gen/keybroker/v1/pin_pb.js";
import type { PinService as Pins } from "../../sessions/pin-service.js";
import type { ServiceHandlers } from "../transport/handlers.js";
import type { UserCallGuard } from "./call-guard.js";

/** Thin handlers: authorize, delegate. The PIN goes from the body to the service, nowhere else. */
export function createPinServiceHandlers(deps: {
  guard: UserCallGuard;
  pins: Pins;
}): ServiceHandlers<typeof PinService> {
  const { guard, pins } = deps;
  return {
    async setPin(request, ctx) {
      const { caller, user } = await guard.authorize(ctx, "secrets:write");
      const current = request.currentPin === "" ? undefined : request.currentPin;
      await pins.setPin(
        user,
        request.pin,
        current,
        { requestId: ctx.requestId, callerKeyId: caller.keyId },
        ctx.signal,
      );
      return {};
    },
    async unlockSession(request, ctx) {
      const { caller, user } = await guard.authorize(ctx, "secrets:read");
      await pins.unlockSession(
        user,
        request.pin,
        { requestId: ctx.requestId, callerKeyId: caller.keyId },
        ctx.signal,
      );
      return {};
    },
  };
}
