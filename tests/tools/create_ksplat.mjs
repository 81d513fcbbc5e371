// Writes a .ksplat with GaussianSplats3D's own encoder (the library's PlyParser and
// SplatBufferGenerator, as its util/create-ksplat.js does), for tests/test_formats_web.py.
// usage: node create_ksplat.mjs LIBRARY_MODULE_JS PLY OUT LEVEL SH_DEGREE [BLOCK_SIZE] [BUCKET_SIZE]
import { readFileSync, writeFileSync } from 'fs';
import { pathToFileURL } from 'url';

const [library, ply, out, level, shDegree, blockSize = '5.0', bucketSize = '256'] = process.argv.slice(2);
const G = await import(pathToFileURL(library).href);
const data = readFileSync(ply);
const buffer = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
const splats = G.PlyParser.parseToUncompressedSplatArray(buffer, Number(shDegree));
const generator = G.SplatBufferGenerator.getStandardGenerator(
    1, Number(level), 0, undefined, Number(blockSize), Number(bucketSize));
const splatBuffer = generator.generateFromUncompressedSplatArray(splats);
writeFileSync(out, Buffer.from(splatBuffer.bufferData));
