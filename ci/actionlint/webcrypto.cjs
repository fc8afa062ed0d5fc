// Go's WebAssembly runtime needs the global `crypto`, which Node.js has by default from version
// 19 on; Debian 12's Node.js is 18.
globalThis.crypto ??= require("node:crypto").webcrypto;
