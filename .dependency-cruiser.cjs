// The import directions of src/, checked by `npm run lint:deps` (CI and `npm run check`).
// docs/architecture.md draws the same map; change both together.
//
// Layers, top to bottom. A module may import its own layer's folders and any layer BELOW it,
// never one above: the arrows point one way, so each layer can be read, tested and replaced
// without the ones above it.
const LAYERS = [
  { name: "cli", paths: ["^src/cli/"] },
  // The composition root and the configuration it reads: the only code that sees everything.
  { name: "root", paths: ["^src/app/", "^src/config/"] },
  // The only code that knows protobuf, grpc-js and Connect.
  { name: "api", paths: ["^src/api/"] },
  {
    name: "services",
    paths: [
      "^src/secrets/",
      "^src/proxy/",
      "^src/admin/",
      "^src/rotation/",
      "^src/sessions/",
      "^src/signals/",
      "^src/oauth/",
    ],
  },
  { name: "observability", paths: ["^src/observability/"] },
  {
    name: "capabilities",
    paths: ["^src/auth/", "^src/audit/", "^src/outbound/", "^src/keys/", "^src/policy/"],
  },
  { name: "storage-and-primitives", paths: ["^src/store/", "^src/crypto/"] },
  { name: "foundation", paths: ["^src/log/", "^src/errors\\.ts$", "^src/gen/"] },
];

const anyOf = (paths) => `(${paths.join("|")})`;

const layerRules = LAYERS.slice(1).map((layer, index) => {
  const above = LAYERS.slice(0, index + 1);
  return {
    name: `layer-${layer.name}-imports-only-down`,
    comment: `${layer.name} sits below ${above.map((l) => l.name).join(", ")}: an import upwards would make the lower layer depend on its callers.`,
    severity: "error",
    from: { path: anyOf(layer.paths) },
    to: { path: anyOf(above.flatMap((l) => l.paths)) },
  };
});

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "no-circular",
      comment:
        "A cycle makes two modules one unit that cannot be loaded, tested or understood apart; break it by moving the shared piece down.",
      severity: "error",
      from: {},
      to: { circular: true },
    },
    ...layerRules,
    {
      name: "only-cli-imports-the-composition-root",
      comment:
        "src/app wires everything; anything else importing it would pull the whole system in (and config sits beside it, not above it).",
      severity: "error",
      from: { pathNot: "^src/(app|cli)/" },
      to: { path: "^src/app/" },
    },
    {
      name: "nothing-imports-the-cli",
      comment: "The CLI is the process entry point: argument parsing and exit codes stay out of the library.",
      severity: "error",
      from: { pathNot: "^src/cli/" },
      to: { path: "^src/cli/" },
    },
    {
      name: "api-never-imports-store",
      comment:
        "Handlers call domain services; a handler with a database handle bypasses the service's checks and audit. Driver errors are translated in store/, so the edge maps only BrokerError.",
      severity: "error",
      from: { path: "^src/api/" },
      to: { path: "^src/store/" },
    },
    {
      name: "transport-does-not-know-rpcs",
      comment:
        "api/transport carries any service (gRPC, Connect, TLS, health); the RPC handlers plug into it from api/rpc, never the other way round.",
      severity: "error",
      from: { path: "^src/api/transport/" },
      to: { path: "^src/api/rpc/" },
    },
    {
      name: "store-never-decrypts",
      comment:
        "store/ moves ciphertext and never holds a key: no keyring, data key or envelope opening below the services.",
      severity: "error",
      from: { path: "^src/store/" },
      to: { path: "^src/(keys/|crypto/(envelope|field-codec)\\.ts$)" },
    },
    {
      name: "crypto-is-pure-src",
      comment:
        "crypto/ holds pure primitives (envelope, field codec, canonical encoding): from src it may use only errors.ts, so it can be tested with bytes alone.",
      severity: "error",
      from: { path: "^src/crypto/" },
      to: { path: "^src/", pathNot: "^src/(crypto/|errors\\.ts$)" },
    },
    {
      name: "crypto-does-no-io",
      comment:
        "crypto/ never queries, reads files or calls KMS: of the built-ins only node:crypto and node:buffer, and no packages (pg, kysely, @aws-sdk, ...).",
      severity: "error",
      from: { path: "^src/crypto/" },
      to: {
        dependencyTypesNot: ["local"],
        pathNot: "^(node:)?(crypto|buffer)$",
      },
    },
    {
      name: "not-to-unresolvable",
      comment:
        "An import the tool cannot resolve is an import no rule above can check: fix the path (or the resolver settings below).",
      severity: "error",
      from: {},
      to: { couldNotResolve: true },
    },
    {
      name: "not-to-dev-dep",
      comment: "src/ ships to production, where devDependencies are not installed.",
      severity: "error",
      from: { path: "^src/" },
      to: { dependencyTypes: ["npm-dev"] },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    // Type-only imports count too: a type from a higher layer couples the code just as much.
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    // NodeNext: `./x.js` in a .ts file means ./x.ts, and packages resolve through their
    // `exports` subpaths (e.g. @bufbuild/protobuf/wkt) as Node resolves them.
    enhancedResolveOptions: {
      exportsFields: ["exports"],
      conditionNames: ["import", "require", "node", "default", "types"],
      extensions: [".ts", ".js", ".mjs", ".cjs", ".json"],
      mainFields: ["module", "main", "types"],
    },
  },
};
