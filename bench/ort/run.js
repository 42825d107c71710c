#!/usr/bin/env node
// ONNX Runtime baseline for bench/encode: times the CLIP towers that bench/export_onnx.py exported
// (the same seeded weights clipl and the PyTorch baseline use) with onnxruntime-node on the CPU,
// the way bench/encode times clipl: one warm-up call, then the median, min and max of N calls.
//
// usage: node bench/ort/run.js --dir DIR --images IMGS.npy --tokens TOKENS.npy
//            [--models ViT-B/32,RN50] [--batches 1,16] [--repeat N] [--threads T]
//            [--out-dir DIR] [--passive]
//   DIR holds <model>-image.onnx and <model>-text.onnx ('/' in the name becomes '-');
//   IMGS.npy: [B, 3, R, R] float32 (batch b uses the first b images); TOKENS.npy: [N, 77] int32
//   or int64. --out-dir saves the outputs on all of IMGS and TOKENS as ort-<model>-image<B>.npy
//   and ort-<model>-text<N>.npy (float32) for bench/encode's check against clipl. --passive turns
//   off the spinning of ORT's intra-op threads (as OMP_WAIT_POLICY=passive does for OpenMP).
//
// Prints one JSON object: {"ort", "threads", "<model>/image<b>/f32/ort": {"median", "min",
// "max"} seconds per call, "<model>/text<N>/f32/ort": ...}. Install onnxruntime-node first:
// cd bench/ort && ONNXRUNTIME_NODE_INSTALL=skip npm ci
"use strict";
const fs = require("fs");
const path = require("path");
const ort = require("onnxruntime-node");

function parseArgs(argv) {
    const a = {models: "ViT-B/32,RN50", batches: "1,16", repeat: 3, threads: 2, passive: false};
    for (let i = 0; i < argv.length; i++) {
        const k = argv[i];
        if (k === "--passive") {
            a.passive = true;
        } else if (k.startsWith("--") && i + 1 < argv.length) {
            a[k.slice(2).replace("-", "_")] = argv[++i];
        } else {
            throw new Error("run.js: unknown argument " + k);
        }
    }
    for (const k of ["dir", "images", "tokens"]) {
        if (!a[k]) throw new Error("run.js: --" + k + " is required");
    }
    a.repeat = Number(a.repeat);
    a.threads = Number(a.threads);
    return a;
}

const NPY_TYPES = {"<f4": Float32Array, "<i4": Int32Array, "<i8": BigInt64Array};

// {data: TypedArray, shape: [..]} of a little-endian, C-order .npy file
function readNpy(file) {
    const buf = fs.readFileSync(file);
    if (buf.toString("latin1", 1, 6) !== "NUMPY") throw new Error(file + ": not a .npy file");
    const major = buf[6];
    const hlen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
    const start = major === 1 ? 10 : 12;
    const header = buf.toString("latin1", start, start + hlen);
    const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
    if (/'fortran_order':\s*True/.test(header)) throw new Error(file + ": Fortran order");
    const shape = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(",").filter((s) => s.trim())
        .map(Number);
    const Type = NPY_TYPES[descr];
    if (!Type) throw new Error(file + ": dtype " + descr + " not supported");
    const n = shape.reduce((x, y) => x * y, 1);
    const bytes = buf.subarray(start + hlen, start + hlen + n * Type.BYTES_PER_ELEMENT);
    const data = new Type(n);
    new Uint8Array(data.buffer).set(bytes);
    return {data, shape};
}

function writeNpy(file, data, shape) {
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + shape.join(", ") +
        (shape.length === 1 ? ",)" : ")") + ", }";
    header += " ".repeat(63 - ((10 + header.length) % 64)) + "\n";
    const pre = Buffer.alloc(10);
    pre.write("\x93NUMPY", 0, "latin1");
    pre[6] = 1;
    pre[7] = 0;
    pre.writeUInt16LE(header.length, 8);
    const f32 = Float32Array.from(data);
    fs.writeFileSync(file, Buffer.concat([pre, Buffer.from(header, "latin1"),
        Buffer.from(f32.buffer)]));
}

// the first b rows of an npy array as an ort.Tensor of the given type
function rows(arr, b, type) {
    const per = arr.shape.slice(1).reduce((x, y) => x * y, 1);
    let data = arr.data.subarray(0, b * per);
    if (type === "int64" && !(data instanceof BigInt64Array)) {
        data = BigInt64Array.from(data, (v) => BigInt(v));
    }
    return new ort.Tensor(type, data, [b, ...arr.shape.slice(1)]);
}

async function timeit(session, feeds, repeat) {
    await session.run(feeds); // warm-up: kernel selection, first touch of buffers
    const ts = [];
    for (let i = 0; i < repeat; i++) {
        const t0 = process.hrtime.bigint();
        await session.run(feeds);
        ts.push(Number(process.hrtime.bigint() - t0) * 1e-9);
    }
    ts.sort((x, y) => x - y);
    return {median: ts[Math.floor((ts.length - 1) / 2)], min: ts[0], max: ts[ts.length - 1]};
}

async function main() {
    const a = parseArgs(process.argv.slice(2));
    const opts = {
        executionProviders: ["cpu"],
        intraOpNumThreads: a.threads,
        interOpNumThreads: 1,
        executionMode: "sequential",
        graphOptimizationLevel: "all",
        extra: {session: {intra_op: {allow_spinning: a.passive ? "0" : "1"}}},
    };
    const images = readNpy(a.images);
    const tokens = readNpy(a.tokens);
    const n = tokens.shape[0];
    const out = {ort: ort.env.versions.node || ort.env.versions.common, threads: a.threads};
    for (const name of a.models.split(",")) {
        const slug = name.replace(/\//g, "-");
        const tower = async (what, input, key, runs) => {
            const session = await ort.InferenceSession.create(
                path.join(a.dir, slug + "-" + what + ".onnx"), opts);
            for (const [b, feeds] of runs) {
                out[name + "/" + key(b) + "/f32/ort"] = await timeit(session, feeds, a.repeat);
            }
            if (a.out_dir) {
                const b = runs[runs.length - 1][0];
                const y = (await session.run(runs[runs.length - 1][1])).embedding;
                writeNpy(path.join(a.out_dir, "ort-" + slug + "-" + key(b) + ".npy"), y.data,
                    y.dims);
            }
            await session.release();
        };
        const batches = a.batches.split(",").map(Number).filter((b) => b <= images.shape[0]);
        if (!batches.includes(images.shape[0])) batches.push(images.shape[0]);
        await tower("image", "image", (b) => "image" + b,
            batches.map((b) => [b, {image: rows(images, b, "float32")}]));
        await tower("text", "tokens", () => "text" + n,
            [[n, {tokens: rows(tokens, n, "int64")}]]);
    }
    console.log(JSON.stringify(out));
}

main().catch((e) => {
    console.error(String(e && e.message ? e.message : e));
    process.exit(1);
});
