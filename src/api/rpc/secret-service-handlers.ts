import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { AuditedRunner } from "../../audit/audited-operation.js";
import {
  ConnectionStatus,
  type KeyInspection as ProtoKeyInspection,
  type OAuthConnection as ProtoOAuthConnection,
  type SecretMetadata as ProtoSecretMetadata,
  type SecretService,
} from "../../gen/keybroker/v1/secrets_pb.js";
import type { SecretDeleter } from "../../oauth/secret-deleter.js";
import { grantLabel } from "../../policy/operation-grant.js";
import { parseProviderId, parsePutSecret, parseSecretId } from "../../secrets/secret-input.js";
import type { SecretMetadata, SecretService as Secrets } from "../../secrets/secret-service.js";
import type { SecretUses } from "../../secrets/secret-uses.js";
import type { ServiceHandlers } from "../transport/handlers.js";
import { actorOf } from "./audit-actor.js";
import type { UserCallGuard } from "./call-guard.js";

type ProtoMetadataInit = Omit<
  ProtoSecretMetadata,
  "$typeName" | "$unknown" | "fieldNames" | "grant" | "inspection" | "connection"
> & {
  fieldNames: string[];
  grant: string[];
  inspection: Omit<ProtoKeyInspection, "$typeName" | "$unknown">;
  connection?: Omit<ProtoOAuthConnection, "$typeName" | "$unknown">;
};

/** Thin handlers: authorize, parse, delegate (audited), convert. Logic lives in secrets/. */
export function createSecretServiceHandlers(deps: {
  guard: UserCallGuard;
  secrets: Secrets;
  /** DeleteSecret: revokes an OAuth connection at its provider, then deletes (issue 15 item 5). */
  deleter: SecretDeleter;
  uses: SecretUses;
  audited: AuditedRunner;
}): ServiceHandlers<typeof SecretService> {
  const { guard, secrets, deleter, uses, audited } = deps;
  return {
    async putSecret(request, ctx) {
      const { caller, user } = await guard.authorize(ctx, "secrets:write");
      const input = parsePutSecret(request);
      const metadata = await audited.run(
        actorOf(ctx, caller, user),
        {
          action: "secret.put",
          sensitive: true,
          ...(input.secretId === undefined ? {} : { target: input.secretId }),
          detail: { provider: input.provider, fieldCount: input.fields.size },
          resultTarget: (m) => m.id,
          // The grant as stored, and whether it widened the previous one (SPEC I10).
          resultDetail: (m) => ({
            secretVersion: m.version,
            grant: grantLabel(m.grant),
            grantChange: m.grantChange,
            ...inspectionDetail(m),
          }),
        },
        () => secrets.put(user, input, ctx.signal),
      );
      return { secret: toProto(metadata) };
    },
    async inspectSecret(request, ctx) {
      const { caller, user } = await guard.authorize(ctx, "secrets:write");
      const secretId = parseSecretId(request.secretId);
      // A use of the key: `started` is committed before it is decrypted (I8).
      const metadata = await audited.runWithRead(
        actorOf(ctx, caller, user),
        {
          action: "secret.inspect",
          sensitive: true,
          target: secretId,
          resultDetail: (m: SecretMetadata) => ({
            provider: m.provider,
            secretVersion: m.version,
            ...inspectionDetail(m),
          }),
        },
        () => secrets.fetch(user, secretId),
        (sealed) => secrets.inspect(user, sealed, ctx.signal),
      );
      return { secret: toProto(metadata) };
    },
    async listSecrets(request, ctx) {
      const { caller, user } = await guard.authorize(ctx, "secrets:read");
      const provider = request.provider === "" ? undefined : parseProviderId(request.provider);
      const query = { provider, pageSize: request.pageSize, pageToken: request.pageToken };
      const page = await audited.run(
        actorOf(ctx, caller, user),
        { action: "secret.list", sensitive: false, resultDetail: (p) => ({ count: p.secrets.length }) },
        () => secrets.list(user, query, ctx.signal),
      );
      return { secrets: page.secrets.map(toProto), nextPageToken: page.nextPageToken };
    },
    async deleteSecret(request, ctx) {
      const { caller, user } = await guard.authorize(ctx, "secrets:write");
      const secretId = parseSecretId(request.secretId);
      const actor = actorOf(ctx, caller, user);
      await audited.run(actor, { action: "secret.delete", sensitive: true, target: secretId }, () =>
        deleter.delete(user, secretId, actor),
      );
      return {};
    },
    async listSecretUses(request, ctx) {
      const { caller, user } = await guard.authorize(ctx, "secrets:read");
      const secretId = parseSecretId(request.secretId);
      const page = await audited.run(
        actorOf(ctx, caller, user),
        {
          action: "secret.uses",
          sensitive: false,
          target: secretId,
          resultDetail: (p) => ({ count: p.uses.length }),
        },
        () => uses.list(user, { secretId, pageSize: request.pageSize, pageToken: request.pageToken }),
      );
      return {
        uses: page.uses.map((u) => ({ ...u, time: timestampFromDate(u.at) })),
        nextPageToken: page.nextPageToken,
      };
    },
  };
}

function toProto(m: SecretMetadata): ProtoMetadataInit {
  return {
    id: m.id,
    provider: m.provider,
    label: m.label,
    version: m.version,
    fieldNames: [...m.fieldNames],
    grant: [...m.grant],
    hint: m.hint,
    fingerprint: m.fingerprint,
    createdAt: timestampFromDate(m.createdAt),
    updatedAt: timestampFromDate(m.updatedAt),
    lastUsedAt: m.lastUsedAt === null ? undefined : timestampFromDate(m.lastUsedAt),
    inspection: {
      verdict: m.inspection.verdict,
      permissions: [...m.inspection.permissions],
      dangerousPermissions: [...m.inspection.dangerous],
      checkedAt: m.inspection.checkedAt === null ? undefined : timestampFromDate(m.inspection.checkedAt),
    },
    ...(m.connection === null
      ? {}
      : {
          connection: {
            status:
              m.connection.status === "active" ? ConnectionStatus.ACTIVE : ConnectionStatus.NEEDS_RECONSENT,
            expiresAt:
              m.connection.expiresAt === null ? undefined : timestampFromDate(m.connection.expiresAt),
            grantedScopes: [...m.connection.scopes],
          },
        }),
  };
}

/** The inspection in an audit row: verdict and permission names, never a value. */
function inspectionDetail(m: SecretMetadata) {
  return {
    inspection: m.inspection.verdict,
    ...(m.inspection.permissions.length === 0 ? {} : { permissions: m.inspection.permissions.join(",") }),
    ...(m.inspection.dangerous.length === 0
      ? {}
      : { dangerousPermissions: m.inspection.dangerous.join(",") }),
  };
}
