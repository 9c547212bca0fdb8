import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { UserCallGuard } from "../auth/user-call-guard.js";
import type { SecretMetadata as ProtoSecretMetadata, SecretService } from "../gen/keybroker/v1/secrets_pb.js";
import { parseProviderId, parsePutSecret, parseSecretId } from "../secrets/secret-input.js";
import type { SecretMetadata, SecretService as Secrets } from "../secrets/secret-service.js";
import type { ServiceHandlers } from "./handlers.js";

type ProtoMetadataInit = Omit<ProtoSecretMetadata, "$typeName" | "$unknown" | "fieldNames"> & {
  fieldNames: string[];
};

/** Thin handlers: authorize, parse, delegate, convert. Logic lives in secrets/. */
export function createSecretServiceHandlers(deps: {
  guard: UserCallGuard;
  secrets: Secrets;
}): ServiceHandlers<typeof SecretService> {
  const { guard, secrets } = deps;
  return {
    async putSecret(request, ctx) {
      const { user } = await guard.authorize(ctx, "secrets:write");
      const metadata = await secrets.put(user, parsePutSecret(request), ctx.signal);
      return { secret: toProto(metadata) };
    },
    async listSecrets(request, ctx) {
      const { user } = await guard.authorize(ctx, "secrets:read");
      const provider = request.provider === "" ? undefined : parseProviderId(request.provider);
      const list = await secrets.list(user, provider, ctx.signal);
      return { secrets: list.map(toProto) };
    },
    async deleteSecret(request, ctx) {
      const { user } = await guard.authorize(ctx, "secrets:write");
      await secrets.delete(user, parseSecretId(request.secretId));
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
    hint: m.hint,
    fingerprint: m.fingerprint,
    createdAt: timestampFromDate(m.createdAt),
    updatedAt: timestampFromDate(m.updatedAt),
    lastUsedAt: m.lastUsedAt === null ? undefined : timestampFromDate(m.lastUsedAt),
  };
}
