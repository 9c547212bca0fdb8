/**
 * Builds the `@keybroker/client` package: `dist/esm` (ES modules) and `dist/cjs` (CommonJS), each
 * with type declarations, from `client/*.ts` and the parts of `src/` it shares with the broker
 * (wire header names, the ErrorInfo reader, the generated protobuf-es code).
 *
 *   npm run build:client            -> client/dist
 *   npx tsx client/build.ts DIR     -> DIR
 *
 * One type-checked compile emits the ESM and the declarations; each of the same sources is then
 * transpiled alone to CommonJS (the repo is ESM, so tsc alone cannot emit both from one tree).
 * The declarations are copied beside the CommonJS files, and a `package.json` in each tree tells
 * Node and TypeScript which module format its files are.
 */
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import ts from "typescript";

const CLIENT_DIR = dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = resolve(CLIENT_DIR, "..");
const ENTRY_POINTS = ["index.ts", "messages.ts"].map((name) => join(CLIENT_DIR, name));

/** Builds into `distDir` (emptied first); throws with the compiler's diagnostics on an error. */
export function buildClient(distDir: string = join(CLIENT_DIR, "dist")): void {
  rmSync(distDir, { recursive: true, force: true });
  const esmDir = join(distDir, "esm");
  const cjsDir = join(distDir, "cjs");

  const program = ts.createProgram(ENTRY_POINTS, {
    ...rootCompilerOptions(),
    noEmit: false,
    declaration: true,
    declarationMap: false,
    sourceMap: false,
    rootDir: REPO_ROOT,
    outDir: esmDir,
  });
  const emitted = program.emit();
  const diagnostics = [...ts.getPreEmitDiagnostics(program), ...emitted.diagnostics];
  if (diagnostics.length > 0 || emitted.emitSkipped) {
    throw new Error(
      ts.formatDiagnostics(diagnostics, {
        getCanonicalFileName: (name) => name,
        getCurrentDirectory: () => REPO_ROOT,
        getNewLine: () => "\n",
      }),
    );
  }

  for (const source of program.getSourceFiles()) {
    if (source.isDeclarationFile || source.fileName.includes("/node_modules/")) continue;
    const { outputText } = ts.transpileModule(source.text, {
      fileName: source.fileName,
      compilerOptions: {
        module: ts.ModuleKind.CommonJS,
        target: ts.ScriptTarget.ES2023,
        esModuleInterop: true,
        verbatimModuleSyntax: false,
        isolatedModules: true,
        sourceMap: false,
      },
    });
    const target = join(cjsDir, relative(REPO_ROOT, source.fileName).replace(/\.ts$/, ".js"));
    mkdirSync(dirname(target), { recursive: true });
    writeFileSync(target, outputText);
  }
  for (const declaration of filesUnder(esmDir).filter((file) => file.endsWith(".d.ts"))) {
    const target = join(cjsDir, relative(esmDir, declaration));
    mkdirSync(dirname(target), { recursive: true });
    copyFileSync(declaration, target);
  }
  writeFileSync(join(esmDir, "package.json"), `${JSON.stringify({ type: "module" })}\n`);
  writeFileSync(join(cjsDir, "package.json"), `${JSON.stringify({ type: "commonjs" })}\n`);
}

/** The repo's compiler options (strictness, target), so the package is checked like the rest. */
function rootCompilerOptions(): ts.CompilerOptions {
  const configFile = join(REPO_ROOT, "tsconfig.json");
  const { config, error } = ts.readConfigFile(configFile, (path) => readFileSync(path, "utf8"));
  if (error !== undefined) throw new Error(ts.flattenDiagnosticMessageText(error.messageText, "\n"));
  return ts.parseJsonConfigFileContent(config, ts.sys, REPO_ROOT, undefined, configFile).options;
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name));
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const distDir = process.argv[2] === undefined ? undefined : resolve(process.argv[2]);
  buildClient(distDir);
  console.log(`client: built ${relative(process.cwd(), distDir ?? join(CLIENT_DIR, "dist")) || "."}`);
}
