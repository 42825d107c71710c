-- Tokenizer throughput: 100k prompts of mixed length and script (English captions, accented
-- Latin, Greek/Cyrillic, CJK), generated deterministically. Prints texts/s and tokens/s for
-- tok:tokenize in batches (cold word cache, then warm) and for tok:encode one text at a time.
--   bench/tokenize [BUILD_DIR] [--n N] [--vocab PATH] [--batch B]
local clip = require "clipl"
local ffi = require "ffi"

ffi.cdef [[
    struct clipl_bench_timespec { long tv_sec; long tv_nsec; };
    int clock_gettime(int clk, struct clipl_bench_timespec *ts);
]]
local ts = ffi.new("struct clipl_bench_timespec")
local function now()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local opts = {n = 100000, batch = 1000,
    vocab = os.getenv("CLIPL_VOCAB") or "../shared/clip/bpe_simple_vocab_16e6.txt.gz"}
local i = 1
while i <= #arg do
    local a = arg[i]
    if a == "--n" then opts.n = tonumber(arg[i + 1]); i = i + 1
    elseif a == "--batch" then opts.batch = tonumber(arg[i + 1]); i = i + 1
    elseif a == "--vocab" then opts.vocab = arg[i + 1]; i = i + 1
    else error("bench/tokenize: unknown argument " .. a) end
    i = i + 1
end

-- deterministic generator (MINSTD: products stay below 2^53, so doubles are exact)
local state = 12345
local function rnd(n)
    state = (state * 48271) % 2147483647
    return math.floor(state / 2147483647 * n) + 1
end
local function pick(t) return t[rnd(#t)] end

local adj = {"small", "large", "red", "blue", "old", "young", "happy", "wet", "fluffy", "shiny",
    "wooden", "broken", "bright", "dark", "tiny", "giant", "striped", "spotted", "frozen", "golden"}
local noun = {"dog", "cat", "car", "house", "tree", "bird", "horse", "boat", "bicycle", "pizza",
    "elephant", "giraffe", "mountain", "river", "street", "child", "woman", "man", "guitar",
    "laptop", "airplane", "train", "flower", "sandwich", "umbrella", "clock", "bridge", "castle"}
local verb = {"sitting on", "standing next to", "running across", "lying under", "flying over",
    "parked near", "looking at", "jumping over", "holding", "eating"}
local place = {"the beach", "a park", "the city", "a kitchen", "the snow", "a field", "the road",
    "a table", "the water", "a forest", "the sky", "a garden"}
local accented = {"café", "crème brûlée", "naïve", "façade", "Über", "Straße", "mañana", "niño",
    "São Paulo", "Zürich", "Ångström", "smørrebrød", "Łódź", "résumé", "jalapeño", "Dvořák",
    "Ελληνικά", "φωτογραφία", "Привет", "собака", "кошка", "İstanbul", "Ὀδυσσεύς", "ΣΟΦΙΑ"}
local cjk = {"猫", "犬", "写真", "東京", "北京", "山", "川", "花", "車", "家", "の", "が", "に",
    "を", "です", "ます", "タワー", "カメラ", "고양이", "사진", "서울", "강아지", "一只", "可爱",
    "的", "小狗", "在", "草地", "上", "跑"}

local function english(words)
    local parts = {pick({"a photo of a", "a picture of the", "an image of a", "a", "the"}),
        pick(adj), pick(noun)}
    while #parts < words do
        parts[#parts + 1] = pick(verb)
        parts[#parts + 1] = pick(place)
        if rnd(3) == 1 then parts[#parts + 1] = "with a " .. pick(adj) .. " " .. pick(noun) end
    end
    local s = table.concat(parts, " ")
    if rnd(2) == 1 then s = s .. "." end
    if rnd(10) == 1 then s = s:gsub("^%l", string.upper) .. " It's 2024!" end
    return s
end

local function accented_text(words)
    local parts = {}
    for k = 1, words do
        parts[k] = rnd(3) == 1 and pick(accented) or pick(noun)
    end
    return table.concat(parts, " ")
end

local function cjk_text(chars)
    local parts = {}
    for k = 1, chars do
        parts[k] = pick(cjk)
        if rnd(8) == 1 then parts[k] = parts[k] .. (rnd(2) == 1 and "、" or "，") end
    end
    if rnd(2) == 1 then parts[#parts + 1] = "。" end
    return table.concat(parts)
end

local texts = {}
local kinds = {english = 0, accented = 0, cjk = 0, mixed = 0}
for k = 1, opts.n do
    local r = rnd(10)
    local len = rnd(4) == 1 and rnd(40) + 10 or rnd(10) + 2 -- mostly short, some long
    if r <= 6 then
        texts[k] = english(len); kinds.english = kinds.english + 1
    elseif r <= 8 then
        texts[k] = accented_text(len); kinds.accented = kinds.accented + 1
    elseif r == 9 then
        texts[k] = cjk_text(len); kinds.cjk = kinds.cjk + 1
    else
        texts[k] = english(3) .. " " .. cjk_text(4) .. " " .. accented_text(3)
        kinds.mixed = kinds.mixed + 1
    end
end
local bytes = 0
for k = 1, #texts do bytes = bytes + #texts[k] end

local tok = clip.tokenizer(opts.vocab)
print(("%d prompts (%d English, %d accented/Greek/Cyrillic, %d CJK, %d mixed), %.1f MB, " ..
    "batches of %d, %d thread(s) of Lua"):format(#texts, kinds.english, kinds.accented, kinds.cjk,
    kinds.mixed, bytes / 1e6, opts.batch, 1))

local function count_tokens(t)
    local n, p = 0, ffi.cast("const int32_t *", t.ptr)
    local total = tonumber(t.shape[0] * t.shape[1])
    for k = 0, total - 1 do
        if p[k] ~= 0 then n = n + 1 end
    end
    return n
end

local function run_tokenize()
    local t0, c0 = now(), os.clock()
    local ntok = 0
    local tensors = {}
    for s = 1, #texts, opts.batch do
        local b = {}
        for k = s, math.min(s + opts.batch - 1, #texts) do b[#b + 1] = texts[k] end
        tensors[#tensors + 1] = tok:tokenize(b, {truncate = true})
    end
    local dt, dc = now() - t0, os.clock() - c0
    for _, t in ipairs(tensors) do ntok = ntok + count_tokens(t) end
    return dt, dc, ntok
end

-- Rates use CPU seconds of this (single-threaded) process, so that other load on a shared machine
-- does not count; wall seconds are printed beside them.
local function report(label, dt, dc, ntok)
    print(("%-36s %7.3f s wall %7.3f s cpu %9.0f texts/s %10.0f tokens/s"):format(label, dt, dc,
        #texts / dc, ntok / dc))
end

tok:clear_cache()
report("tokenize, cold word cache", run_tokenize())
local cached = tok:cache_size()
report("tokenize, warm word cache", run_tokenize())

local t0, c0 = now(), os.clock()
local n = 0
for k = 1, #texts do n = n + #tok:encode(texts[k]) end
report("encode one by one (Lua tables), warm", now() - t0, os.clock() - c0, n)

tok:set_cache_limit(0)
report("tokenize, word cache off", run_tokenize())
print(("word cache: %d entries after the cold pass; tokens counted include start/end ids"):format(
    cached))

-- one pathological pre-token: 64000 random letters without a space (BPE on a single word)
local letters = {}
for k = 1, 64000 do letters[k] = string.char(96 + rnd(26)) end
local word = table.concat(letters)
c0 = os.clock()
local ids = tok:encode(word)
print(("one 64000-letter word: %d ids in %.3f s cpu"):format(#ids, os.clock() - c0))
