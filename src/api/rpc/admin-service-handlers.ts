import { type Timestamp, timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  parseAuditQuery,
  parseCallerKeyExpiry,
  parseCallerKeyId,
  parseUserSelector,
} from "../../admin/admin-input.js";
import type { CallerKeyAdmin, CallerKeySummary } from "../../admin/caller-key-admin.js";
import type { UserShredder } from "../../admin/user-shredder.js";
import type { AuditChainVerdict } from "../../audit/audit-chain.js";
import type { AuditCheckpointVerdict } from "../../audit/audit-checkpoint-verify.js";
import type { AuditEventView, AuditReader } from "../../audit/audit-reader.js";
import type { AuditActor, AuditedRunner } from "../../audit/audited-operation.js";
import type { CallerIdentity } from "../../auth/identity.js";
import type { AdminService } from "../../gen/keybroker/v1/admin_pb.js";
import type { CallContext } from "../transport/call-context.js";
import type { ServiceHandlers } from "../transport/handlers.js";
import type { UserCallGuard } from "./call-guard.js";

/** Operator RPCs: the `admin` scope, no user token. Thin: authorize, parse, delegate (audited), convert. */
export function createAdminServiceHandlers(deps: {
  guard: UserCallGuard;
  callerKeys: CallerKeyAdmin;
  shredder: UserShredder;
  audited: AuditedRunner;
  auditReader: AuditReader;
  /** user_ref of a subject under the configured issuer (the raw subject is used and forgotten). */
  userRefOf: (subject: string) => Buffer;
}): ServiceHandlers<typeof AdminService> {
  const { guard, callerKeys, audited, auditReader } = deps;
  const admin = (ctx: CallContext) => guard.authorizeCaller(ctx, "admin");

  return {
    async createCallerKey(request, ctx) {
      const caller = await admin(ctx);
      const expiresAt = parseCallerKeyExpiry(request.expiresInDays, new Date());
      const created = await audited.run(
        actorOf(ctx, caller),
        { action: "caller_key.create", sensitive: true, resultTarget: (c) => c.summary.id },
        () => callerKeys.create({ name: request.name, scopes: request.scopes, expiresAt }),
      );
      return { key: created.key, callerKey: toProto(created.summary) };
    },
    async listCallerKeys(request, ctx) {
      await admin(ctx);
      const page = await callerKeys.listPage({ pageSize: request.pageSize, pageToken: request.pageToken });
      return { callerKeys: page.keys.map(toProto), nextPageToken: page.nextPageToken };
    },
    async revokeCallerKey(request, ctx) {
      const caller = await admin(ctx);
      const id = parseCallerKeyId(request.id);
      await audited.run(
        actorOf(ctx, caller),
        { action: "caller_key.revoke", sensitive: true, target: id },
        () => callerKeys.revoke(id),
      );
      return {};
    },
    async rotateCallerKey(request, ctx) {
      const caller = await admin(ctx);
      const id = parseCallerKeyId(request.id);
      const rotated = await audited.run(
        actorOf(ctx, caller),
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
      const userRef = parseUserSelector(request.user, deps.userRefOf);
      const destroyed = await audited.run(
        actorOf(ctx, caller, userRef),
        { action: "user.shred", sensitive: true, resultDetail: (n) => ({ count: n }) },
        () => deps.shredder.shred(userRef),
      );
      return { secretsDestroyed: destroyed };
    },
    async queryAudit(request, ctx) {
      await admin(ctx);
      const query = parseAuditQuery({
        ...request,
        since: dateOf(request.since),
        until: dateOf(request.until),
      });
      const events = await auditReader.query(query);
      return { events: events.map(toProtoEvent) };
    },
    async verifyAudit(_request, ctx) {
      await admin(ctx);
      const chain = await auditReader.verify();
      const checkpoint = await auditReader.verifyCheckpoint();
      return toProtoVerdict(chain, checkpoint);
    },
  };
}

/** An operator call's actor: no user token, so a user ref only when the call names one. */
function actorOf(ctx: CallContext, caller: CallerIdentity, userRef: Buffer | null = null): AuditActor {
  return { requestId: ctx.requestId, callerKeyId: caller.keyId, userRef };
}

const dateOf = (value: Timestamp | undefined): Date | undefined =>
  value === undefined ? undefined : timestampDate(value);

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

function toProtoEvent(e: AuditEventView) {
  return {
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
  };
}

function toProtoVerdict(chain: AuditChainVerdict, checkpoint: AuditCheckpointVerdict | undefined) {
  const checkpointOk =
    checkpoint === undefined || checkpoint.status === "none" || checkpoint.status === "covered";
  return {
    ok: chain.ok && checkpointOk,
    rows: BigInt(chain.rows),
    ...(chain.ok ? {} : { firstBadSeq: BigInt(chain.firstBadSeq), reason: chain.reason }),
    ...(chain.ok && !checkpointOk
      ? { reason: `the newest signed checkpoint shows the trail ${checkpoint?.status}` }
      : {}),
    checkpoint: toProtoCheckpoint(checkpoint),
  };
}

function toProtoCheckpoint(verdict: AuditCheckpointVerdict | undefined) {
  if (verdict === undefined) return { status: "not_configured" };
  if (verdict.status === "none") return { status: "none", uncoveredRows: BigInt(verdict.uncoveredRows) };
  return {
    status: verdict.status,
    checkpointSeq: BigInt(verdict.checkpointSeq),
    signedAt: timestampFromDate(verdict.signedAt),
    ...(verdict.status === "covered" ? { uncoveredRows: BigInt(verdict.uncoveredRows) } : {}),
  };
}
