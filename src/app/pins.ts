import type { UserCallGuard } from "../api/rpc/call-guard.js";
import { createPinServiceHandlers } from "../api/rpc/pin-service-handlers.js";
import { registerService, type ServiceRegistration } from "../api/transport/handlers.js";
import type { AuditLog } from "../audit/audit-log.js";
import type { Config } from "../config/config.js";
import { PinService } from "../gen/keybroker/v1/pin_pb.js";
import { createPinService } from "../sessions/pin-service.js";
import type { DatabaseHandle } from "../store/database.js";
import type { Keys } from "./keys.js";

/** PinService (issue 14 item 4): optional user PINs over the keys this app already holds. */
export function registerPinService(deps: {
  readonly config: Pick<Config, "pin">;
  readonly database: DatabaseHandle;
  readonly keys: Pick<Keys, "keyring" | "userDataKeys" | "pinSessions">;
  readonly guard: UserCallGuard;
  readonly audit: Pick<AuditLog, "record">;
}): ServiceRegistration {
  const { config, database, keys } = deps;
  const pins = createPinService({
    db: database.db,
    keyring: keys.keyring,
    userDataKeys: keys.userDataKeys,
    pinSessions: keys.pinSessions,
    policy: {
      maxAttempts: config.pin.maxAttempts,
      backoffMs: config.pin.backoffMs,
      lockoutMs: config.pin.lockoutMs,
    },
    scryptLogN: config.pin.scryptLogN,
    audit: deps.audit,
  });
  return registerService(PinService, createPinServiceHandlers({ guard: deps.guard, pins }));
}
