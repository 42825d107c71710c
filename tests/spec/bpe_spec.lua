-- clip.bpe: learning a vocabulary that clip.tokenizer loads. Checked against the tokenizer itself
-- (every learned word is one token, decode round trips), against OpenAI's word boundaries (the
-- golden ids of ../shared/clip/tokenizer_cases.jsonl, made by simple_tokenizer.py), byte-identical
-- files, the learn-bpe script, and errors.
local clip = require "clipl"
local cjson = require "cjson"

local GOLDEN = "../../shared/clip/"

local H = require "helpers_env"
local read = H.read

local function tmp(suffix)
    local p = os.tmpname()
    os.remove(p)
    return p .. suffix
end

local err_of = H.err_of -- the message of the error fn(...) raises (and that it raises)

describe("clip.bpe", function()
    local captions = select(2, clip.shapes.batch(300, {seed = 1, raw = true, two = 0.3}))

    it("learns the shapes captions: every word becomes one token, decode round trips", function()
        local path = tmp(".txt.gz")
        local v = clip.bpe.learn(captions, {merges = 1000, out = path})
        assert.is_true(#v.merges > 20 and #v.merges < 1000) -- stopped when all words were whole
        local tok = clip.tokenizer(path)
        assert.are.equal(512 + #v.merges + 2, tok.vocab_size)
        assert.are.equal(v.vocab_size, tok.vocab_size)
        for _, c in ipairs(captions) do
            local ids = tok:encode(c)
            local n_words = select(2, c:gsub("%S+", ""))
            assert.are.equal(n_words, #ids, c)
            assert.are.equal(c .. " ", tok:decode(ids)) -- simple_tokenizer's decode: "</w>" -> " "
        end
        -- tokenize rows: start, ids, end, zero padding
        local t = tok:tokenize({captions[1]})
        assert.are.equal(tok.sot, t:get(1, 1))
        os.remove(path)
    end)

    it("writes byte-identical files for the same input and merge count", function()
        local a, b = tmp(".gz"), tmp(".gz")
        clip.bpe.learn(captions, {merges = 40, out = a})
        clip.bpe.learn(captions, {merges = 40, out = b})
        assert.are.equal(read(a), read(b))
        local v = clip.bpe.learn(captions, {merges = 40})
        assert.are.equal(40, #v.merges)
        -- counts never increase from one merge to the next
        for i = 2, #v.counts do
            assert.is_true(v.counts[i] <= v.counts[i - 1])
        end
        os.remove(a)
        os.remove(b)
    end)

    it("pre-tokenizes as OpenAI's tokenizer: golden cases' words are one token each", function()
        -- OpenAI's ids mark each word's end with a "</w>" token; a vocabulary learned to the end
        -- on the same texts must give exactly one id per such word
        local texts, words = {}, {}
        local openai = clip.tokenizer(GOLDEN .. "bpe_simple_vocab_16e6.txt.gz")
        for line in io.lines(GOLDEN .. "tokenizer_cases.jsonl") do
            local case = cjson.decode(line)
            local n = 0
            for _, id in ipairs(case.ids) do
                if id == openai.sot or id == openai.eot or openai:decode({id}):sub(-1) == " " then
                    n = n + 1
                end
            end
            texts[#texts + 1] = case.text
            words[#words + 1] = n
        end
        local path = tmp(".txt.gz")
        clip.bpe.learn(texts, {merges = 48894, out = path})
        local tok = clip.tokenizer(path)
        local bad = {}
        for i, text in ipairs(texts) do
            if #tok:encode(text) ~= words[i] then
                bad[#bad + 1] = text
            end
        end
        assert.are.same({}, bad)
        os.remove(path)
    end)

    it("reads caption files and TSVs", function()
        local txt, tsv = tmp(".txt"), tmp(".tsv")
        local f = io.open(txt, "wb")
        f:write("a red circle\n\na blue star\n")
        f:close()
        f = io.open(tsv, "wb")
        f:write("path\tcaption\tcolour\nimg/1.png\ta green heart\tgreen\n")
        f:close()
        assert.are.same({"a red circle", "a blue star"}, clip.bpe.read_texts(txt))
        assert.are.same({"a green heart"}, clip.bpe.read_texts(tsv))
        local v = clip.bpe.learn_file({txt, tsv}, {merges = 5})
        assert.are.equal(9, v.words)
        os.remove(txt)
        os.remove(tsv)
    end)

    it("clipl learn-bpe writes the vocabulary", function()
        local clipl = os.getenv("CLIPL_LIB"):match("^(.*)/[^/]+$") .. "/clipl"
        local txt, out = tmp(".txt"), tmp(".txt.gz")
        local f = io.open(txt, "wb")
        for _, c in ipairs(captions) do
            f:write(c, "\n")
        end
        f:close()
        local p = io.popen(clipl .. " learn-bpe --out " .. out .. " --merges 500 " .. txt ..
            " 2>&1")
        local msg = p:read("*a")
        p:close()
        assert.truthy(msg:find("100.0% of the input's words are one token", 1, true), msg)
        local v = clip.bpe.learn(captions, {merges = 500, min_count = 2})
        local direct = tmp(".txt.gz")
        v:save(direct)
        assert.are.equal(read(direct), read(out))
        os.remove(txt)
        os.remove(out)
        os.remove(direct)
    end)

    it("bad arguments give clear errors", function()
        local err = err_of(clip.bpe.learn, "a red circle")
        assert.truthy(err:find("bpe.learn: texts must be a table of strings, got string", 1, true))
        err = err_of(clip.bpe.learn, {"ok", 42})
        assert.truthy(err:find("texts[2] is a number, expected a string", 1, true))
        err = err_of(clip.bpe.learn, {"ab\255"})
        assert.truthy(err:find("texts[1]: bpe_trainer_add: invalid UTF-8 at byte offset 2", 1,
            true))
        err = err_of(clip.bpe.learn, {"a"}, {merges = -1})
        assert.truthy(err:find("merges must be in 0..48894", 1, true))
        err = err_of(clip.bpe.learn, {"a"}, {merges = 1.5})
        assert.truthy(err:find("option merges must be an integer", 1, true))
        err = err_of(clip.bpe.learn, {"a b"}, {out = "/nonexistent/dir/v.gz"})
        assert.truthy(err:find("cannot create '/nonexistent/dir/v.gz", 1, true))
        err = err_of(clip.bpe.read_texts, "/nonexistent/captions.txt")
        assert.truthy(err:find("cannot open '/nonexistent/captions.txt'", 1, true))
    end)
end)
