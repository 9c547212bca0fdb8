import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { AuditedRunner } from "../../audit/audited-operation.js";
import type {
  SecretMetadata as ProtoSecretMetadata,
  SecretService,
} from "../../gen/keybroker/v1/secrets_pb.js";
import { grantLabel } from "../../policy/operation-grant.js";
import { parseProviderId, parsePutSecret, parseSecretId } from "../../secrets/secret-input.js";
import type { SecretMetadata, SecretService as Secrets } from "../../secrets/secret-service.js";
import type { ServiceHandlers } from "../transport/handlers.js";
import { actorOf } from "./audit-actor.js";
import type { UserCallGuard } from "./call-guard.js";

type ProtoMetadataInit = Omit<ProtoSecretMetadata, "$typeName" | "$unknown" | "fieldNames" | "grant"> & {
  fieldNames: string[];
  grant: string[];
};

/** Thin handlers: authorize, parse, delegate (audited), convert. Logic lives in secrets/. */
export function createSecretServiceHandlers(deps: {
  guard: UserCallGuard;
  secrets: Secrets;
  audited: AuditedRunner;
}): ServiceHandlers<typeof SecretService> {
  const { guard, secrets, audited } = deps;
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
          }),
        },
        () => secrets.put(user, input, ctx.signal),
      );
      return { secret: toProto(metadata) };
    },
    async listSecrets(request, ctx) {
      const { caller, user } = await guard.authorize(ctx, "secrets:read");
      const provider = request.provider === "" ? undefined : parseProviderId(request.provider);
      const list = await audited.run(
        actorOf(ctx, caller, user),
        { action: "secret.list", sensitive: false, resultDetail: (l) => ({ count: l.length }) },
        () => secrets.list(user, provider, ctx.signal),
      );
      return { secrets: list.map(toProto) };
    },
    async deleteSecret(request, ctx) {
      const { caller, user } = await guard.authorize(ctx, "secrets:write");
      const secretId = parseSecretId(request.secretId);
      await audited.run(
        actorOf(ctx, caller, user),
        { action: "secret.delete", sensitive: true, target: secretId },
        () => secrets.delete(user, secretId),
      );
      return {};
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
  };
}
