import { type DescFile, type DescService, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { ReflectionService } from "@grpc/reflection";

// Its own proto-loader version's type; only `fileDescriptorProtos` of each entry is read.
type ReflectedPackage = ConstructorParameters<typeof ReflectionService>[0];

/** Extra descriptors to publish: encoded FileDescriptorProtos, e.g. grpc.health.v1's. */
export interface ReflectedFiles {
  /** Fully-qualified names of services served outside protobuf-es, e.g. `grpc.health.v1.Health`. */
  readonly serviceNames: readonly string[];
  readonly fileDescriptorProtos: readonly Buffer[];
}

/**
 * Server reflection (v1 and v1alpha) for `buf curl` and `grpcurl`. The schema comes from the
 * descriptors protobuf-es embeds in the generated code, so no .proto file is read at run
 * time and reflection can never drift from what the server actually decodes. Only the
 * services passed in are listed.
 */
export function createReflectionService(
  services: readonly DescService[],
  extra: ReflectedFiles,
): ReflectionService {
  const files = new Map<string, Buffer>();
  for (const service of services) {
    collectFiles(service.file, files);
  }
  const definition: Record<string, { fileDescriptorProtos: Buffer[] }> = {};
  for (const [name, bytes] of files) {
    definition[name] = { fileDescriptorProtos: [bytes] };
  }
  definition["(extra)"] = { fileDescriptorProtos: [...extra.fileDescriptorProtos] };
  const names = [...services.map((service) => service.typeName), ...extra.serviceNames];
  return new ReflectionService(definition as unknown as ReflectedPackage, { services: names });
}

/** Adds `file` and everything it imports (e.g. google/protobuf/timestamp.proto), once each. */
function collectFiles(file: DescFile, into: Map<string, Buffer>): void {
  const name = file.proto.name;
  if (into.has(name)) {
    return;
  }
  const bytes = toBinary(FileDescriptorProtoSchema, file.proto);
  into.set(name, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  for (const dependency of file.dependencies) {
    collectFiles(dependency, into);
  }
}
