import { describe, expect, it } from "vitest";
import {
  DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
  RECEIVE_FRAMING_BYTES,
  receiveLimitFor,
} from "../../../../src/api/transport/call-lifecycle.js";
import {
  largestRequestBodyBytes,
  parseProviderRegistry,
} from "../../../../src/outbound/provider-registry.js";

const MIB = 1024 * 1024;

describe("the RPC receive cap (review F3)", () => {
  it("G73 F3: leaves room for the framing around the largest body a provider accepts", () => {
    expect(receiveLimitFor(MIB)).toBe(MIB + RECEIVE_FRAMING_BYTES);
    expect(receiveLimitFor(64 * MIB)).toBe(64 * MIB + RECEIVE_FRAMING_BYTES);
  });

  it("G73 F3: never goes below the 1 MiB default when every provider takes less", () => {
    expect(receiveLimitFor(0)).toBe(DEFAULT_MAX_RECEIVE_MESSAGE_BYTES);
  });

  it("G73 F3: reads the largest maxRequestBytes of the registry, 1 MiB for a provider that sets none", () => {
    const provider = (id: string, maxRequestBytes?: number) => ({
      id,
      displayName: id,
      baseUrl: `https://${id}.example.com`,
      allowedHosts: [`${id}.example.com`],
      allowedMethods: ["POST"],
      pathPatterns: ["/**"],
      requiredFields: ["token"],
      auth: { type: "bearer", field: "token" },
      timeoutMs: 1000,
      maxResponseBytes: 1024,
      ...(maxRequestBytes === undefined ? {} : { maxRequestBytes }),
    });
    const registry = (...providers: unknown[]) => parseProviderRegistry({ providers }, { production: true });
    expect(largestRequestBodyBytes(registry(provider("small", 1024)))).toBe(1024);
    expect(largestRequestBodyBytes(registry(provider("small", 1024), provider("plain")))).toBe(MIB);
    expect(largestRequestBodyBytes(registry(provider("plain"), provider("bulk", 16 * MIB)))).toBe(16 * MIB);
  });
});
