import { status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import {
  keybrokerErrorOf,
  PermissionDeniedError,
  UnauthenticatedError,
} from "../../../client/keybroker-client.js";
import { refusalFromStatusDetails, statusDetailsOf } from "../../../src/api/error-info.js";

describe("client errors: refusal reasons", () => {
  it("exposes the reason and credential the broker sent as an ErrorInfo detail", () => {
    const bin = statusDetailsOf(status.UNAUTHENTICATED, "invalid caller key", "caller_key_invalid");

    const err = keybrokerErrorOf(
      { code: status.UNAUTHENTICATED, details: "invalid caller key", refusal: refusalFromStatusDetails(bin) },
      "req-1",
      [],
    );

    expect(err).toBeInstanceOf(UnauthenticatedError);
    expect(err).toMatchObject({ credential: "caller_key", reason: "caller_key_invalid", requestId: "req-1" });
  });

  it("tells a refused user token apart by its detail", () => {
    const bin = statusDetailsOf(status.UNAUTHENTICATED, "user access token expired", "token_expired");

    const err = keybrokerErrorOf(
      {
        code: status.UNAUTHENTICATED,
        details: "user access token expired",
        refusal: refusalFromStatusDetails(bin),
      },
      undefined,
      [],
    );

    expect(err).toMatchObject({ credential: "user_token", reason: "token_expired" });
  });

  it("exposes the reason of a permission refusal", () => {
    const bin = statusDetailsOf(
      status.PERMISSION_DENIED,
      "caller key lacks the scope",
      "caller_key_scope_missing",
    );

    const err = keybrokerErrorOf(
      {
        code: status.PERMISSION_DENIED,
        details: "caller key lacks the scope",
        refusal: refusalFromStatusDetails(bin),
      },
      undefined,
      [],
    );

    expect(err).toBeInstanceOf(PermissionDeniedError);
    expect(err).toMatchObject({ code: "PERMISSION_DENIED", reason: "caller_key_scope_missing" });
  });

  it("reads the credential from the detail, never from the message text", () => {
    const err = keybrokerErrorOf(
      { code: status.UNAUTHENTICATED, details: "invalid caller key" },
      undefined,
      [],
    );

    expect(err).toMatchObject({ credential: "user_token", reason: undefined });
  });

  it.each([
    ["bytes that are not a google.rpc.Status", Buffer.from([0xff, 0xff, 0xff])],
    ["an empty Status", Buffer.alloc(0)],
  ])("finds no refusal in %s", (_case, bytes) => {
    expect(refusalFromStatusDetails(bytes)).toBeUndefined();
  });
});
