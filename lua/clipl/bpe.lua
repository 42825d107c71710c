--- Learning a BPE vocabulary (engine/text/bpe_train.c) in the format of OpenAI's
-- bpe_simple_vocab_16e6.txt.gz, so that clip.tokenizer(path) loads it.
--
--   local v = clip.bpe.learn(captions, {merges = 200})   -- a table of strings
--   v:save("vocab.txt.gz")                               -- "#version: 0.2" + one merge per line
--   print(v.merges[1], v.counts[1], v.words, v.distinct_words)
--   clip.bpe.learn_file("captions.txt", {merges = 200, out = "vocab.txt.gz"})
--
-- Texts are cleaned and pre-tokenized exactly as the tokenizer does; each step merges the most
-- frequent adjacent pair of symbols, ties going to the pair whose first (then second) symbol is
-- smaller in byte order. The same texts and merge count give a byte-identical file.
local ffi = require "ffi"
local lib = require "clipl.lib"

local C, check = lib.C, lib.check

local M = {}
local bpe = {}
M.bpe = bpe

--- A learned vocabulary: the merges as "a b" strings, their pair counts, and the word counts.
local Vocab = {}
Vocab.__index = Vocab
bpe.Vocab = Vocab

local count_buf = ffi.new("int64_t[1]")
local learned_buf = ffi.new("int[1]")

local function opt_number(opts, key, default, what)
    local v = opts[key]
    if v == nil then
        return default
    end
    if type(v) ~= "number" or v ~= math.floor(v) then
        error(what .. ": option " .. key .. " must be an integer, got " .. tostring(v), 3)
    end
    return v
end

--- bpe.learn(texts, opts): texts is a table of strings (or of {text, count} pairs); opts.merges
-- (the number of merges to learn, default 1000; fewer when every word has become one symbol),
-- opts.min_count (stop when the best pair occurs fewer times; default 1), opts.out (also save
-- there). Returns a Vocab.
function bpe.learn(texts, opts)
    opts = opts or {}
    if type(texts) ~= "table" then
        error("bpe.learn: texts must be a table of strings, got " .. type(texts), 2)
    end
    if type(opts) ~= "table" then
        error("bpe.learn: opts must be a table, got " .. type(opts), 2)
    end
    local n_merges = opt_number(opts, "merges", 1000, "bpe.learn")
    local min_count = opt_number(opts, "min_count", 1, "bpe.learn")
    if n_merges < 0 or n_merges > 48894 then
        error("bpe.learn: merges must be in 0..48894 (OpenAI's vocabulary size), got " ..
            n_merges, 2)
    end
    local t = lib.check_ptr(C.clipl_bpe_trainer_new(), 2)
    t = ffi.gc(t, C.clipl_bpe_trainer_free)
    for i, s in ipairs(texts) do
        local count = 1
        if type(s) == "table" then
            s, count = s[1], s[2] or 1
        end
        if type(s) ~= "string" then
            error("bpe.learn: texts[" .. i .. "] is a " .. type(s) .. ", expected a string", 2)
        end
        local rc = C.clipl_bpe_trainer_add(t, s, #s, count)
        if rc ~= 0 then
            local msg = ffi.string(C.clipl_errmsg())
            C.clipl_errclear()
            error("bpe.learn: texts[" .. i .. "]: " .. msg, 2)
        end
    end
    check(C.clipl_bpe_trainer_learn(t, n_merges, min_count, learned_buf), 2)
    local self = setmetatable({_h = t, merges = {}, counts = {}}, Vocab)
    for i = 1, learned_buf[0] do
        local s = C.clipl_bpe_trainer_merge(t, i - 1, count_buf)
        self.merges[i] = ffi.string(s)
        self.counts[i] = tonumber(count_buf[0])
    end
    self.words = tonumber(C.clipl_bpe_trainer_words(t, 0))
    self.distinct_words = tonumber(C.clipl_bpe_trainer_words(t, 1))
    -- ids as clip.tokenizer numbers them: 256 bytes, 256 "</w>" forms, merges, two specials
    self.vocab_size = 512 + #self.merges + 2
    if opts.out then
        self:save(opts.out)
    end
    return self
end

--- v:save(path): writes the vocabulary file (gzip when path ends in ".gz").
function Vocab:save(path)
    if type(path) ~= "string" then
        error("bpe save: path must be a string, got " .. type(path), 2)
    end
    check(C.clipl_bpe_trainer_save(self._h, path), 2)
    return path
end

--- The lines of a text file (or the caption column of a TSV with a header "path\tcaption..."
-- or of rows "path\tcaption"). Empty lines are skipped.
function bpe.read_texts(path)
    local f, err = io.open(path, "rb")
    if not f then
        error("bpe.read_texts: cannot open '" .. tostring(path) .. "': " .. tostring(err), 2)
    end
    local texts, first = {}, true
    for line in f:lines() do
        line = line:gsub("\r$", "")
        local a, b = line:match("^([^\t]*)\t([^\t]*)")
        if a then
            if not (first and a == "path" and b == "caption") then
                texts[#texts + 1] = b
            end
        elseif line ~= "" then
            texts[#texts + 1] = line
        end
        first = false
    end
    f:close()
    return texts
end

--- bpe.learn_file(path or {paths}, opts): learns from the lines of text files (see read_texts).
function bpe.learn_file(paths, opts)
    if type(paths) == "string" then
        paths = {paths}
    end
    local texts = {}
    for _, p in ipairs(paths) do
        for _, s in ipairs(bpe.read_texts(p)) do
            texts[#texts + 1] = s
        end
    end
    return bpe.learn(texts, opts)
end

return M
