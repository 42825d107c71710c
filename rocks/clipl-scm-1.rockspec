rockspec_format = "3.0"
package = "clipl"
version = "scm-1"

source = {
    -- `luarocks make rocks/clipl-scm-1.rockspec` from a checkout builds the checkout itself
    url = "git+https://github.com/clipl/clipl.git",
}

description = {
    summary = "CLIP (OpenAI's image-text model) on Intel oneDNN, scriptable from LuaJIT",
    detailed = [[
clipl runs CLIP's image and text encoders in a C11 engine on oneDNN primitives, with libvips for
image preprocessing, and exposes them to LuaJIT through the FFI: clip.load, clip.tokenize,
encode_image, encode_text, zero-shot classification, training. The rock installs the Lua modules,
libclipl and the `clipl` launcher (REPL, `clipl run`, subcommands).]],
    license = "MIT",
    labels = {"clip", "deep-learning", "onednn", "ffi"},
}

dependencies = {
    "lua == 5.1", -- LuaJIT (the FFI is required)
}

external_dependencies = {
    -- Debian: libdnnl-dev libvips-dev libluajit-5.1-dev libpcre2-dev libutf8proc-dev zlib1g-dev
    --         libcjson-dev libedit-dev libcurl4-openssl-dev libssl-dev (scripts/setup installs them)
    -- CMake looks them up itself and names any that is missing.
}

build = {
    type = "cmake",
    variables = {
        CMAKE_BUILD_TYPE = "Release",
        CMAKE_INSTALL_PREFIX = "$(PREFIX)",
        CMAKE_INSTALL_LIBDIR = "$(LIBDIR)",
        CMAKE_INSTALL_BINDIR = "$(BINDIR)",
        CLIPL_INSTALL_LUADIR = "$(LUADIR)",
        CLIPL_TESTS = "OFF",
        CLIPL_SOVERSION = "OFF", -- one libclipl.so file: LuaRocks moves files, not symlinks
    },
    copy_directories = {"docs"},
}

test_dependencies = {"busted"}
