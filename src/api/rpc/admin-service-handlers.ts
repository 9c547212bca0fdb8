import { type Timestamp, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Kysely } from "kysely";
import type { CallerKeyAdmin } from "../../admin/caller-key-admin.js";
import type { UserShredder } from "../../admin/user-shredder.js";
import { verifyAuditChain } from "../../audit/audit-chain.js";
import type { AuditLog } from "../../audit/audit-log.js";
import type { AuditedRunner } from "../../audit/audited-operation.js";
import type { CallerIdentity } from "../../auth/identity.js";
import { invalidArgument } from "../../errors.js";
import type { AdminService } from "../../gen/keybroker/v1/admin_pb.js";
import { queryAuditEvents } from "../../store/audit.repository.js";
import type { CallerKeySummary } from "../../store/caller-keys.repository.js";
import type { Database } from "../../store/schema.js";
import type { CallContext } from "../transport/call-context.js";
import type { ServiceHandlers } from "../transport/handlers.js";
import type { UserCallGuard } from "./call-guard.js";

const DAY_MS = 86_400_000;
const USER_REF_HEX = /^[0-9a-f]{64}$/;
const CALLER_KEY_ID = /^ck_[0-9a-f]{16}$/;
const AUDIT_ACTION = /^[a-z_]{1,32}\.[a-z_]{1,32}$/;
const MAX_EXPIRY_DAYS = 3650;
// Postgres timestamptz and JS Dates agree on years 1-9999; outside that the query fails (F51).
const MIN_TIME = Date.UTC(1, 0, 1);
const MAX_TIME = Date.UTC(9999, 11, 31);

function parseCallerKeyId(id: string): string {
  if (!CALLER_KEY_ID.test(id))
    throw invalidArgument("id must be a caller key id (ck_ and 16 hex characters)");
  return id;
}

function parseTime(value: Timestamp | undefined, name: string): Date | undefined {
  if (value === undefined) return undefined;
  const date = timestampDate(value);
  const time = date.getTime();
  if (!Number.isFinite(time) || time < MIN_TIME || time > MAX_TIME)
    throw invalidArgument(`${name} must be between years 1 and 9999`);
  return date;
}

/** Operator RPCs: the `admin` scope, no user token. Thin: authorize, parse, delegate (audited), convert. */
export function createAdminServiceHandlers(deps: {
  guard: UserCallGuard;
  /** Flushed before the trail is read: an operator sees every outcome this replica has answered for. */
  audit: Pick<AuditLog, "flush">;
  callerKeys: CallerKeyAdmin;
  shredder: UserShredder;
  audited: AuditedRunner;
  db: Kysely<Database>;
  /** user_ref of a subject under the configured issuer (the raw subject is used and forgotten). */
  userRefOf: (subject: string) => Buffer;
}): ServiceHandlers<typeof AdminService> {
  const { guard, callerKeys, audited } = deps;
  const admin = (ctx: CallContext) => guard.authorizeCaller(ctx, "admin");
  const actor = (ctx: CallContext, caller: CallerIdentity, userRef: Buffer | null = null) => ({
    requestId: ctx.requestId,
    callerKeyId: caller.keyId,
    userRef,
  });

  return {
    async createCallerKey(request, ctx) {
      const caller = await admin(ctx);
      if (request.expiresInDays > MAX_EXPIRY_DAYS)
        throw invalidArgument(`expires_in_days must be 0-${MAX_EXPIRY_DAYS}`);
      const expiresAt =
        request.expiresInDays === 0 ? null : new Date(Date.now() + request.expiresInDays * DAY_MS);
      const created = await audited.run(
        actor(ctx, caller),
        { action: "caller_key.create", sensitive: true, resultTarget: (c) => c.summary.id },
        () => callerKeys.create({ name: request.name, scopes: request.scopes, expiresAt }),
      );
      return { key: created.key, callerKey: toProto(created.summary) };
    },
    async listCallerKeys(_request, ctx) {
      await admin(ctx);
      return { callerKeys: (await callerKeys.list()).map(toProto) };
    },
    async revokeCallerKey(request, ctx) {
      const caller = await admin(ctx);
      const id = parseCallerKeyId(request.id);
      await audited.run(
        actor(ctx, caller),
        { action: "caller_key.revoke", sensitive: true, target: id },
        () => callerKeys.revoke(id),
      );
      return {};
    },
    async rotateCallerKey(request, ctx) {
      const caller = await admin(ctx);
      const id = parseCallerKeyId(request.id);
      const rotated = await audited.run(
        actor(ctx, caller),
        { action: "caller_key.rotate", sensitive: true, target: id },
        () => callerKeys.rotate(id, request.overlapSeconds),
      );
      return {
        key: rotated.key,
        callerKey: toProto(rotated.summary),
        oldKeyExpiresAt: timestampFromDate(rotated.oldKeyExpiresAt),
      };
    },
    async shredUser(request, ctx) {
      const caller = await admin(ctx);
      const userRef = userRefFrom(request.user, deps.userRefOf);
      const destroyed = await audited.run(
        actor(ctx, caller, userRef),
        { action: "user.shred", sensitive: true, resultDetail: (n) => ({ count: n }) },
        () => deps.shredder.shred(userRef),
      );
      return { secretsDestroyed: destroyed };
    },
    async queryAudit(request, ctx) {
      await admin(ctx);
      await deps.audit.flush();
      if (request.userRef !== "" && !USER_REF_HEX.test(request.userRef)) {
        throw invalidArgument("user_ref must be 64 lowercase hex characters");
      }
      if (request.action !== "" && !AUDIT_ACTION.test(request.action))
        throw invalidArgument("action must look like secret.put");
      if (request.callerKeyId !== "") parseCallerKeyId(request.callerKeyId);
      if (request.afterSeq > BigInt(Number.MAX_SAFE_INTEGER))
        throw invalidArgument("after_seq is out of range");
      const since = parseTime(request.since, "since");
      const until = parseTime(request.until, "until");
      const events = await queryAuditEvents(deps.db, {
        limit: request.limit === 0 ? 100 : request.limit,
        ...(request.afterSeq === 0n ? {} : { afterSeq: Number(request.afterSeq) }),
        ...(request.userRef === "" ? {} : { userRef: Buffer.from(request.userRef, "hex") }),
        ...(request.action === "" ? {} : { action: request.action }),
        ...(request.callerKeyId === "" ? {} : { callerKeyId: request.callerKeyId }),
        ...(since === undefined ? {} : { since }),
        ...(until === undefined ? {} : { until }),
      });
      return {
        events: events.map((e) => ({
          seq: BigInt(e.seq),
          occurredAt: timestampFromDate(e.occurredAt),
          requestId: e.requestId,
          callerKeyId: e.callerKeyId ?? "",
          userRef: e.userRef ?? "",
          action: e.action,
          target: e.target ?? "",
          outcome: e.outcome,
          code: e.code ?? "",
          detail: Object.fromEntries(Object.entries(e.detail).map(([k, v]) => [k, String(v)])),
        })),
      };
    },
    async verifyAudit(_request, ctx) {
      await admin(ctx);
      await deps.audit.flush();
      const verdict = await verifyAuditChain(deps.db);
      return verdict.ok
        ? { ok: true, rows: BigInt(verdict.rows) }
        : {
            ok: false,
            rows: BigInt(verdict.rows),
            firstBadSeq: BigInt(verdict.firstBadSeq),
            reason: verdict.reason,
          };
    },
  };
}

function userRefFrom(
  user:
    | { case: "userRef"; value: string }
    | { case: "subject"; value: string }
    | { case: undefined; value?: undefined },
  userRefOf: (subject: string) => Buffer,
): Buffer {
  if (user.case === "userRef" && USER_REF_HEX.test(user.value)) return Buffer.from(user.value, "hex");
  if (user.case === "subject" && user.value.length > 0 && user.value.length <= 256)
    return userRefOf(user.value);
  throw invalidArgument("give user_ref (64 hex characters) or subject (1-256 characters)");
}

function toProto(key: CallerKeySummary) {
  return {
    id: key.id,
    name: key.name,
    last4: key.last4,
    scopes: [...key.scopes],
    createdAt: timestampFromDate(key.createdAt),
    ...(key.expiresAt === null ? {} : { expiresAt: timestampFromDate(key.expiresAt) }),
    ...(key.revokedAt === null ? {} : { revokedAt: timestampFromDate(key.revokedAt) }),
    ...(key.lastUsedAt === null ? {} : { lastUsedAt: timestampFromDate(key.lastUsedAt) }),
  };
}
