--- CLIP's BPE tokenizer (engine/text), exactly OpenAI's SimpleTokenizer.
--
--   local tok = clip.tokenizer("bpe_simple_vocab_16e6.txt.gz")  -- or a folder, or vocab.json
--   tok:encode("a photo of a dog")          --> {320, 1125, 539, 320, 1929}
--   tok:decode({320, 1125})                 --> "a photo "
--   tok:tokenize({"a dog", "a cat"})        --> 2x77 i32 tensor (49406 ... 49407, zero padding)
--   clip.tokenize({"a dog"}, {truncate = true})   -- the default tokenizer
--
-- The default vocabulary is looked up in $CLIPL_VOCAB, then the model folder (tokenizer_for), then
-- the cache folder ($CLIPL_CACHE, $XDG_CACHE_HOME/clipl or ~/.cache/clipl).
local ffi = require "ffi"
local lib = require "clipl.lib"

local C, check, adopt = lib.C, lib.check, lib.adopt

local M = {}

local OPENAI_FILE = "bpe_simple_vocab_16e6.txt.gz"

--- Tokenizer: the class of the handles clip.tokenizer returns.
local Tokenizer = {}
Tokenizer.__index = Tokenizer
M.Tokenizer = Tokenizer

local files = require "clipl.files"
local getenv, file_exists = files.getenv, files.exists

--- The files of a vocabulary at path: an OpenAI merges file, a HuggingFace vocab.json (merges.txt
-- beside it), or a folder holding either. Returns kind ("openai" / "hf"), file(s); or nil.
local function find_vocab(path)
    if path:match("%.json$") then
        local merges = path:gsub("[^/]*$", "") .. "merges.txt"
        return "hf", path, merges
    end
    if file_exists(path) and not file_exists(path .. "/.") then
        return "openai", path
    end
    local dir = path:gsub("/+$", "")
    if file_exists(dir .. "/" .. OPENAI_FILE) then
        return "openai", dir .. "/" .. OPENAI_FILE
    end
    if file_exists(dir .. "/vocab.json") and file_exists(dir .. "/merges.txt") then
        return "hf", dir .. "/vocab.json", dir .. "/merges.txt"
    end
    if file_exists(dir .. "/tokenizer/vocab.json") and file_exists(dir .. "/tokenizer/merges.txt")
    then
        return "hf", dir .. "/tokenizer/vocab.json", dir .. "/tokenizer/merges.txt"
    end
    return nil
end

local function wrap(p)
    local self = setmetatable({}, Tokenizer)
    self._h = ffi.gc(p, C.clipl_tokenizer_free)
    self.sot = C.clipl_tokenizer_sot(p)
    self.eot = C.clipl_tokenizer_eot(p)
    self.vocab_size = C.clipl_tokenizer_vocab_size(p)
    return self
end

--- clip.tokenizer(path): loads OpenAI's bpe_simple_vocab_16e6.txt.gz, a HuggingFace vocab.json
-- (with merges.txt beside it; or pass both: clip.tokenizer(vocab_json, merges_txt)), or a folder
-- holding either. Raises naming the path when nothing usable is there.
function M.tokenizer(path, merges)
    if type(path) ~= "string" then
        error("tokenizer: expected the path of a vocabulary file or folder, got " .. type(path), 2)
    end
    local p
    if merges then
        p = C.clipl_tokenizer_load_hf(path, merges)
    else
        local kind, a, b = find_vocab(path)
        if kind == nil then
            error("tokenizer: no vocabulary at '" .. path .. "' (expected " .. OPENAI_FILE ..
                " or vocab.json + merges.txt)", 2)
        end
        if kind == "openai" then
            p = C.clipl_tokenizer_load(a)
        else
            p = C.clipl_tokenizer_load_hf(a, b)
        end
    end
    if p == nil then
        lib.check_ptr(p, 2)
    end
    return wrap(p)
end

local function check_self(self, what)
    if getmetatable(self) ~= Tokenizer then
        error(what .. ": call it as tok:" .. what .. "(...)", 3)
    end
    if self._h == nil then
        error(what .. ": the tokenizer was freed", 3)
    end
end

-- reusable buffers (Lua runs one thread per state)
-- Reusable output buffers, grown when an output does not fit.
local id_out = {ctype = "int32_t[?]", cap = 256}
id_out.buf = ffi.new(id_out.ctype, id_out.cap)
local n_out = ffi.new("size_t[1]")
local char_out = {ctype = "char[?]", cap = 1024}
char_out.buf = ffi.new(char_out.ctype, char_out.cap)

-- Calls fn(a, b, c, buf, cap, n) with the buffer out, growing it once when the result does not
-- fit; returns the count n. Errors are raised at the given level (from the caller's view).
local function fill(out, fn, a, b, c, level)
    local rc = fn(a, b, c, out.buf, out.cap, n_out)
    if rc ~= 0 then
        check(rc, level + 1)
    end
    local n = tonumber(n_out[0])
    if n > out.cap then
        while out.cap < n do
            out.cap = out.cap * 2
        end
        out.buf = ffi.new(out.ctype, out.cap)
        check(fn(a, b, c, out.buf, out.cap, n_out), level + 1)
    end
    return n
end

--- tok:encode(text): BPE ids of text (no start/end ids) as a Lua table, as SimpleTokenizer.encode.
function Tokenizer:encode(text)
    check_self(self, "encode")
    if type(text) ~= "string" then
        error("encode: text must be a string, got " .. type(text), 2)
    end
    local n = fill(id_out, C.clipl_tokenizer_encode, self._h, text, #text, 2)
    local out = {}
    for i = 1, n do
        out[i] = id_out.buf[i - 1]
    end
    return out
end

-- fill with the char buffer; returns the text.
local function text_out(fn, a, b, c)
    local n = fill(char_out, fn, a, b, c, 3)
    return ffi.string(char_out.buf, n)
end

--- tok:decode(ids): the text of a table (or 1-d integer tensor) of ids, as SimpleTokenizer.decode
-- (each "</w>" becomes a space; invalid UTF-8 becomes U+FFFD).
function Tokenizer:decode(ids)
    check_self(self, "decode")
    local n, arr
    if type(ids) == "table" then
        n = #ids
        arr = ffi.new("int32_t[?]", n > 0 and n or 1)
        for i = 1, n do
            local v = ids[i]
            if type(v) ~= "number" or v % 1 ~= 0 then
                error("decode: ids[" .. i .. "] is not an integer (" .. tostring(v) .. ")", 2)
            end
            arr[i - 1] = v
        end
    elseif type(ids) == "cdata" and ids.ndim ~= nil then
        if ids.ndim ~= 1 then
            error("decode: expected a 1-d tensor of ids, got " .. ids.ndim .. " dims", 2)
        end
        n = tonumber(ids.shape[0])
        arr = ffi.new("int32_t[?]", n > 0 and n or 1)
        for i = 0, n - 1 do
            local v = ffi.new("double[1]")
            check(C.clipl_tensor_get_flat(ids, i, v), 2)
            arr[i] = v[0]
        end
    else
        error("decode: ids must be a table or a 1-d tensor, got " .. type(ids), 2)
    end
    return text_out(C.clipl_tokenizer_decode, self._h, arr, n)
end

--- tok:clean(text): the text the pre-tokenizer sees (NFC, unescaped, whitespace collapsed,
-- lowercased), for debugging.
function Tokenizer:clean(text)
    check_self(self, "clean")
    if type(text) ~= "string" then
        error("clean: text must be a string, got " .. type(text), 2)
    end
    return text_out(C.clipl_tokenizer_clean, self._h, text, #text)
end

--- tok:tokenize(texts, {context_length = 77, truncate = false}): N x context_length i32 tensor,
-- as OpenAI's clip.tokenize. texts is a string or a list of strings. A text too long is an error
-- naming it unless truncate is set (the row then ends with the end-of-text id).
function Tokenizer:tokenize(texts, opts)
    check_self(self, "tokenize")
    if type(texts) == "string" then
        texts = {texts}
    elseif type(texts) ~= "table" then
        error("tokenize: texts must be a string or a list of strings, got " .. type(texts), 2)
    end
    opts = opts or {}
    if type(opts) ~= "table" then
        error("tokenize: options must be a table ({context_length = 77, truncate = false})", 2)
    end
    local ctx = opts.context_length or 77
    if type(ctx) ~= "number" or ctx < 1 or ctx % 1 ~= 0 then
        error("tokenize: context_length must be a positive integer, got " .. tostring(ctx), 2)
    end
    local n = #texts
    local ptrs = ffi.new("const char *[?]", n > 0 and n or 1)
    local lens = ffi.new("size_t[?]", n > 0 and n or 1)
    for i = 1, n do
        local s = texts[i]
        if type(s) ~= "string" then
            error("tokenize: texts[" .. i .. "] is a " .. type(s) .. ", not a string", 2)
        end
        ptrs[i - 1] = s
        lens[i - 1] = #s
    end
    local slot = lib.slot
    slot[0] = nil
    local rc = C.clipl_tokenizer_tokenize(self._h, n, ptrs, lens, slot, ctx,
        opts.truncate and 1 or 0)
    if rc ~= 0 then
        check(rc, 2)
    end
    return adopt(slot[0])
end

--- tok:token_id("dog</w>"): id of a vocabulary entry in OpenAI's spelling, or nil.
function Tokenizer:token_id(token)
    check_self(self, "token_id")
    local id = C.clipl_tokenizer_token_id(self._h, token, #token)
    return id >= 0 and id or nil
end

--- Word cache: tok:cache_size(), tok:clear_cache(), tok:set_cache_limit(n) (0 turns it off).
function Tokenizer:cache_size()
    check_self(self, "cache_size")
    return tonumber(C.clipl_tokenizer_cache_size(self._h))
end

function Tokenizer:clear_cache()
    check_self(self, "clear_cache")
    C.clipl_tokenizer_cache_clear(self._h)
end

function Tokenizer:set_cache_limit(n)
    check_self(self, "set_cache_limit")
    C.clipl_tokenizer_cache_limit(self._h, n)
end

--- tok:free(): releases the vocabulary now (the GC would do it later). Safe to call twice.
function Tokenizer:free()
    if self._h ~= nil then
        C.clipl_tokenizer_free(ffi.gc(self._h, nil))
        self._h = nil
    end
end

Tokenizer.__call = Tokenizer.tokenize
Tokenizer.__tostring = function(self)
    return ("Tokenizer(vocab_size = %d)"):format(self.vocab_size)
end

-- ---- the default tokenizer ---------------------------------------------------------------------

local cache_dir = files.cache_dir

local loaded = {} -- path -> Tokenizer, so a vocabulary is read once per process

local function load_cached(path)
    local t = loaded[path]
    if not t then
        t = M.tokenizer(path)
        loaded[path] = t
    end
    return t
end

--- clip.tokenizer_for(dir): the tokenizer for a model folder (or the folder of a model file):
-- $CLIPL_VOCAB when set, else the vocabulary in dir (OpenAI's file or vocab.json + merges.txt),
-- else the one in the cache folder.
-- dir may be nil. Raises saying how to get a vocabulary (`clipl download vocab`) when none is
-- found. Tokenizers are loaded once and shared.
function M.tokenizer_for(dir)
    local tried = {}
    local env = getenv("CLIPL_VOCAB")
    if env then
        if not find_vocab(env) then
            error("tokenizer: CLIPL_VOCAB is '" .. env ..
                "', which holds no vocabulary (expected " ..
                OPENAI_FILE .. " or vocab.json + merges.txt)", 2)
        end
        return load_cached(env)
    end
    tried[#tried + 1] = "$CLIPL_VOCAB (not set)"
    if dir and file_exists(dir) and not file_exists(dir .. "/.") then
        dir = dir:match("^(.*)/[^/]*$") or "." -- a model file: look beside it
    end
    if dir then
        if find_vocab(dir) then
            return load_cached(dir)
        end
        tried[#tried + 1] = dir
    end
    local cache = cache_dir()
    if cache then
        if file_exists(cache .. "/" .. OPENAI_FILE) then
            return load_cached(cache .. "/" .. OPENAI_FILE)
        end
        tried[#tried + 1] = cache
    end
    error("tokenizer: no BPE vocabulary found (looked in " .. table.concat(tried, ", ") ..
        "). Get OpenAI's with `clipl download vocab`, or set CLIPL_VOCAB to the path of " ..
        OPENAI_FILE .. " or of a folder with vocab.json + merges.txt", 2)
end

--- clip.default_tokenizer(): the tokenizer clip.tokenize uses (see tokenizer_for).
function M.default_tokenizer()
    return M.tokenizer_for(nil)
end

--- clip.tokenize(texts, {context_length = 77, truncate = false}): as OpenAI's clip.tokenize, with
-- the default tokenizer.
function M.tokenize(texts, opts)
    local ok, tok = pcall(M.tokenizer_for, nil)
    if not ok then
        error(tok, 2)
    end
    return tok:tokenize(texts, opts)
end

return M
