-- The tokenizer against OpenAI's own outputs (../shared/clip/tokenizer_cases.jsonl and
-- tokenizer_decode_cases.jsonl, made by clip/simple_tokenizer.py). Ids are integers: every
-- comparison is exact.
local clip = require "clipl"
local cjson = require "cjson"
local ffi = require "ffi"

local GOLDEN = "../../shared/clip/"
local VOCAB = GOLDEN .. "bpe_simple_vocab_16e6.txt.gz"

local function read_jsonl(path)
    local out = {}
    for line in io.lines(path) do
        if line ~= "" then
            out[#out + 1] = cjson.decode(line)
        end
    end
    return out
end

local function same_list(a, b)
    if #a ~= #b then
        return false
    end
    for i = 1, #a do
        if a[i] ~= b[i] then
            return false
        end
    end
    return true
end

local function row(t, i)
    local r = {}
    for j = 1, t:size(2) do
        r[j] = t[i][j]
    end
    return r
end

-- Runs every encode golden through tok; returns the count of exact cases and the first failure.
local function run_encode_cases(tok, cases)
    local ok, first_bad = 0, nil
    for _, c in ipairs(cases) do
        local ids = tok:encode(c.text)
        local t = tok:tokenize({c.text}, {context_length = 77, truncate = c.truncated})
        if same_list(ids, c.ids) and same_list(row(t, 1), c.tokens77) then
            ok = ok + 1
        elseif not first_bad then
            first_bad = c.text .. ": got " .. table.concat(ids, " ") .. ", want " ..
                table.concat(c.ids, " ")
        end
    end
    return ok, first_bad
end

-- OpenAI's merges file, read through zlib with the FFI, as a list of lines.
local function read_merges_lines()
    ffi.cdef [[
        typedef struct gzFile_s *gzFile;
        gzFile gzopen(const char *path, const char *mode);
        int gzread(gzFile file, void *buf, unsigned len);
        int gzclose(gzFile file);
    ]]
    local ok, z = pcall(ffi.load, "z")
    if not ok then
        z = ffi.load("libz.so.1")
    end
    local f = z.gzopen(VOCAB, "rb")
    assert(f ~= nil, "cannot open " .. VOCAB)
    local parts, buf = {}, ffi.new("char[65536]")
    while true do
        local n = z.gzread(f, buf, 65536)
        assert(n >= 0)
        if n == 0 then
            break
        end
        parts[#parts + 1] = ffi.string(buf, n)
    end
    z.gzclose(f)
    local lines = {}
    for l in (table.concat(parts) .. "\n"):gmatch("([^\n]*)\n") do
        lines[#lines + 1] = l
    end
    return lines
end

local function utf8_char(cp)
    if cp < 0x80 then
        return string.char(cp)
    end
    return string.char(0xC0 + math.floor(cp / 64), 0x80 + cp % 64)
end

-- bytes_to_unicode of simple_tokenizer.py: byte_char[b] is the symbol of byte b, order[i] the byte
-- of vocabulary entry i - 1.
local function bytes_to_unicode()
    local printable, order, byte_char = {}, {}, {}
    for b = 33, 126 do printable[b] = true end
    for b = 161, 172 do printable[b] = true end
    for b = 174, 255 do printable[b] = true end
    for b = 0, 255 do
        if printable[b] then
            order[#order + 1] = b
            byte_char[b] = utf8_char(b)
        end
    end
    local n = 0
    for b = 0, 255 do
        if not printable[b] then
            order[#order + 1] = b
            byte_char[b] = utf8_char(256 + n)
            n = n + 1
        end
    end
    return byte_char, order
end

-- The vocabulary (symbol -> id) and merge ranks ("a b" -> rank) built as simple_tokenizer.py does;
-- also the merges lines.
local function openai_tables()
    local lines = read_merges_lines()
    local byte_char, order = bytes_to_unicode()
    local vocab, next_id, ranks, merges = {}, 0, {}, {}
    local function add(s)
        vocab[s] = next_id
        next_id = next_id + 1
    end
    for i = 1, 256 do add(byte_char[order[i]]) end
    for i = 1, 256 do add(byte_char[order[i]] .. "</w>") end
    for i = 2, 49152 - 256 - 2 + 1 do
        local a, b = lines[i]:match("^(%S+) (%S+)$")
        assert(a, "merges line " .. i)
        add(a .. b)
        ranks[a .. " " .. b] = i - 2
        merges[#merges + 1] = lines[i]
    end
    add("<|startoftext|>")
    add("<|endoftext|>")
    return {vocab = vocab, n = next_id, ranks = ranks, merges = merges, byte_char = byte_char}
end

-- A plain reference of SimpleTokenizer.bpe for one pre-token (its bytes): the quadratic loop,
-- written independently of the C code.
local function reference_bpe(tabs, token)
    local word = {}
    for i = 1, #token do
        word[i] = tabs.byte_char[token:byte(i)]
    end
    word[#word] = word[#word] .. "</w>"
    while #word > 1 do
        local best, bi = math.huge, nil
        for i = 1, #word - 1 do
            local r = tabs.ranks[word[i] .. " " .. word[i + 1]]
            if r and r < best then
                best, bi = r, i
            end
        end
        if not bi then
            break
        end
        local first, second = word[bi], word[bi + 1]
        local new, i = {}, 1
        while i <= #word do
            if i < #word and word[i] == first and word[i + 1] == second then
                new[#new + 1] = first .. second
                i = i + 2
            else
                new[#new + 1] = word[i]
                i = i + 1
            end
        end
        word = new
    end
    local ids = {}
    for i = 1, #word do
        ids[i] = tabs.vocab[word[i]]
    end
    return ids
end

-- Writes a HuggingFace vocab.json + merges.txt made from OpenAI's merges file.
local function write_hf_files(dir, tabs)
    local vf = assert(io.open(dir .. "/vocab.json", "wb"))
    vf:write(cjson.encode(tabs.vocab))
    vf:close()
    local mf = assert(io.open(dir .. "/merges.txt", "wb"))
    mf:write("#version: 0.2\n", table.concat(tabs.merges, "\n"), "\n")
    mf:close()
    return tabs.n
end

describe("tokenizer", function()
    local tok = clip.tokenizer(VOCAB)
    local cases = read_jsonl(GOLDEN .. "tokenizer_cases.jsonl")
    local dcases = read_jsonl(GOLDEN .. "tokenizer_decode_cases.jsonl")
    local tabs = openai_tables()

    it("loads OpenAI's vocabulary", function()
        assert.are.equal(49408, tok.vocab_size)
        assert.are.equal(49406, tok.sot)
        assert.are.equal(49407, tok.eot)
        assert.are.equal(0, tok:token_id("!"))
        assert.is_nil(tok:token_id("not a token"))
    end)

    it("encodes and tokenizes every golden case exactly", function()
        assert.are.equal(247, #cases)
        local ok, bad = run_encode_cases(tok, cases)
        assert.are.equal(#cases, ok, bad)
    end)

    it("tokenizes a batch in one call", function()
        local texts = {}
        for i = 1, #cases do
            texts[i] = cases[i].text
        end
        local t = tok:tokenize(texts, {truncate = true})
        assert.are.same({#cases, 77}, t:size())
        assert.are.equal("i32", t:dtype())
        for i = 1, #cases do
            assert.are.same(cases[i].tokens77, row(t, i))
        end
    end)

    it("decodes every golden case exactly", function()
        assert.are.equal(74, #dcases)
        for _, c in ipairs(dcases) do
            assert.are.equal(c.decoded, tok:decode(c.ids))
            if c.from_text ~= cjson.null then
                assert.are.same(c.ids, tok:encode(c.from_text))
            end
        end
    end)

    it("decodes a 1-d id tensor", function()
        local t = tok:tokenize({"a photo of a dog"})
        assert.are.equal("<|startoftext|>a photo of a dog <|endoftext|>",
            tok:decode(t[1]:narrow(1, 1, 7)))
    end)

    it("gives the same ids with the word cache off", function()
        tok:set_cache_limit(0)
        assert.are.equal(0, tok:cache_size())
        local ok, bad = run_encode_cases(tok, cases)
        assert.are.equal(#cases, ok, bad)
        tok:set_cache_limit(200000)
        tok:encode("warm")
        assert.is_true(tok:cache_size() > 0)
        tok:clear_cache()
        assert.are.equal(0, tok:cache_size())
    end)

    it("returns long encodings whole", function()
        local text = string.rep("elephant giraffe ", 500)
        local ids = tok:encode(text)
        assert.are.equal(1000, #ids)
        assert.are.equal(text, tok:decode(ids))
    end)

    it("raises on a text too long, naming it, unless truncate is set", function()
        local long = string.rep("dog ", 100)
        assert.has_error(function() tok:tokenize({"a cat", long}) end,
            'tokenize: input 2 "dog dog dog dog dog dog dog dog dog dog dog dog dog dog dog dog ' ..
            'dog dog dog ..." is too long for context length 77 (102 tokens with start and end; ' ..
            'set truncate to cut it)')
        local t = tok:tokenize({"a cat", long}, {truncate = true})
        assert.are.equal(49407, t[2][77])
        assert.are.equal(1929, t[2][76])
        local t8 = tok:tokenize("a cat", {context_length = 8})
        assert.are.same({1, 8}, t8:size())
    end)

    it("raises on invalid UTF-8, naming the byte offset", function()
        assert.has_error(function() tok:encode("caf\xC3") end,
            "tokenizer_encode: invalid UTF-8 at byte offset 3 (byte 0xc3)")
        assert.has_error(function() tok:tokenize({"ok", "\xFFx"}) end,
            "tokenize: text 2: invalid UTF-8 at byte offset 0 (byte 0xff)")
    end)

    it("raises on bad arguments", function()
        assert.has_error(function() tok:decode({320, 99999}) end,
            "tokenizer_decode: id 99999 (at position 1) is not in the vocabulary of 49408 ids")
        assert.has_error(function() tok:encode(42) end, "encode: text must be a string, got number")
        assert.has_error(function() tok:tokenize({"a", 3}) end,
            "tokenize: texts[2] is a number, not a string")
        assert.has_error(function() tok:tokenize({"a"}, {context_length = 0}) end,
            "tokenize: context_length must be a positive integer, got 0")
        assert.has_error(function() clip.tokenizer("/no/such/place") end,
            "tokenizer: no vocabulary at '/no/such/place' (expected bpe_simple_vocab_16e6.txt.gz" ..
            " or vocab.json + merges.txt)")
    end)

    it("merges long words as the plain BPE loop does", function()
        -- words of 1..3000 bytes (the C code switches to a heap at 48 bytes) from letters that
        -- pass cleaning unchanged, checked against reference_bpe above
        local letters = {}
        for c in ("abcdefghijklmnopqrstuvwxyzeeaaiioonnrrsstt"):gmatch(".") do
            letters[#letters + 1] = c
        end
        for _, c in ipairs({"é", "à", "ü", "ö", "ß", "ñ", "ç", "ø", "α", "β", "γ", "и", "к",
            "写", "真", "猫"}) do
            letters[#letters + 1] = c
        end
        local state = 4242
        local function rnd(n)
            state = (state * 48271) % 2147483647
            return math.floor(state / 2147483647 * n) + 1
        end
        local checked = 0
        for _, len in ipairs({1, 2, 5, 20, 47, 48, 49, 60, 100, 250, 700, 3000}) do
            for rep = 1, 4 do
                local p = {}
                for i = 1, len do
                    p[i] = rep % 2 == 0 and letters[rnd(30)] or letters[rnd(#letters)]
                end
                local word = table.concat(p)
                assert.are.same(reference_bpe(tabs, word), tok:encode(word))
                checked = checked + 1
            end
        end
        assert.are.equal(48, checked)
    end)

    it("reads HuggingFace vocab.json + merges.txt", function()
        local dir = os.tmpname()
        os.remove(dir)
        assert(os.execute("mkdir -p '" .. dir .. "'") == 0)
        local n = write_hf_files(dir, tabs)
        assert.are.equal(49408, n)
        local hf = clip.tokenizer(dir)
        assert.are.equal(49408, hf.vocab_size)
        local ok, bad = run_encode_cases(hf, cases)
        assert.are.equal(#cases, ok, bad)
        for _, c in ipairs(dcases) do
            assert.are.equal(c.decoded, hf:decode(c.ids))
        end
        -- the model-folder lookup finds the same files
        local t = clip.tokenizer_for(dir)
        assert.are.same(cases[1].ids, t:encode(cases[1].text))
        -- ... and beside a model file
        local mf = assert(io.open(dir .. "/model.safetensors", "wb"))
        mf:close()
        assert.are.equal(t, clip.tokenizer_for(dir .. "/model.safetensors"))
        os.remove(dir .. "/model.safetensors")
        hf:free()
        hf:free()
        os.remove(dir .. "/vocab.json")
        os.remove(dir .. "/merges.txt")
        os.remove(dir)
    end)

    it("finds the default vocabulary through CLIPL_VOCAB", function()
        ffi.cdef "int setenv(const char *name, const char *value, int overwrite);"
        ffi.C.setenv("CLIPL_VOCAB", VOCAB, 1)
        local t = clip.tokenize({"a diagram", "a dog", "a cat"})
        assert.are.same({3, 77}, t:size())
        assert.are.same({49406, 320, 22697, 49407}, {t[1][1], t[1][2], t[1][3], t[1][4]})
        ffi.C.setenv("CLIPL_VOCAB", "", 1)
        ffi.C.setenv("CLIPL_CACHE", "/nonexistent-clipl-cache", 1)
        assert.has_error(function() clip.tokenize({"x"}) end,
            "tokenizer: no BPE vocabulary found (looked in $CLIPL_VOCAB (not set), " ..
            "/nonexistent-clipl-cache). Get OpenAI's with `clipl download vocab`, or set " ..
            "CLIPL_VOCAB to the path of bpe_simple_vocab_16e6.txt.gz or of a folder with " ..
            "vocab.json + merges.txt")
    end)
end)
