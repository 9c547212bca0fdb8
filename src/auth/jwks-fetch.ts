import { rootCertificates } from "node:tls";
import type { FetchImplementation } from "jose";
import { Agent, fetch as undiciFetch } from "undici";

/** A fetch for the issuer's JWKS that also trusts one extra CA, and the agent to close on stop. */
export interface JwksFetch {
  readonly fetch: FetchImplementation;
  close(): Promise<void>;
}

/**
 * An https issuer behind a private CA (review L7) is trusted by adding that CA, never by relaxing
 * TLS or falling back to http: the public roots stay trusted, certificate checks stay on.
 */
export function createJwksFetch(ca: Buffer): JwksFetch {
  const agent = new Agent({ connect: { ca: [...rootCertificates, ca.toString("utf8")] } });
  return {
    async fetch(url, options) {
      const response = await undiciFetch(url, {
        method: options.method,
        redirect: options.redirect,
        signal: options.signal,
        headers: [...options.headers],
        dispatcher: agent,
      });
      // jose reads status, headers and json(); rebuilt as a global Response so the types agree.
      return new Response(await response.arrayBuffer(), {
        status: response.status,
        statusText: response.statusText,
        headers: new Headers([...response.headers]),
      });
    },
    close: () => agent.close(),
  };
}
