-- learns a BPE vocabulary from captions, in the format of OpenAI's bpe_simple_vocab_16e6.txt.gz
--
--   clipl learn-bpe --out vocab.txt.gz --merges 200 captions.txt
--   clipl learn-bpe --out models/clipl-tiny/bpe_vocab.txt.gz data/shapes/train.tsv
--
-- Inputs are text files of one caption per line, or TSVs with a "path<TAB>caption" column pair
-- (the data sets of `clipl make-shapes`). Texts are cleaned and pre-tokenized exactly as CLIP's
-- tokenizer does; the file loads with clip.tokenizer(path). See docs/shapes.md.
local clip = require "clipl"
local cli = require "clipl.cli"

local args = cli.parser {
    name = "learn-bpe",
    description = "Learn a byte-level BPE vocabulary (OpenAI's merges-file format, gzip when " ..
        "the name ends in .gz) from caption files",
    options = {
        {"-o", "--out", arg = "FILE", required = true, help = "vocabulary file to write"},
        {"-m", "--merges", arg = "N", type = "integer", default = 1000,
         help = "merges to learn (fewer when every word has become one token)"},
        {"--min-count", arg = "N", type = "integer", default = 2,
         help = "stop when the most frequent pair occurs fewer times"},
        {"-q", "--quiet", help = "print nothing"},
    },
    positional = {{"files", nargs = "+", help = "caption files (.txt, .tsv)"}},
}:parse(arg)

local ok, v = pcall(clip.bpe.learn_file, args.files, {merges = args.merges,
                                                      min_count = args.min_count, out = args.out})
if not ok then
    io.stderr:write("learn-bpe: ", tostring(v), "\n")
    os.exit(1)
end
if args.quiet then
    return
end
-- how well it covers the input: words that are one token
local tok = clip.tokenizer(args.out)
local whole, words = 0, 0
for _, f in ipairs(args.files) do
    for _, text in ipairs(clip.bpe.read_texts(f)) do
        for word in text:lower():gmatch("%a+") do
            words = words + 1
            whole = whole + (#tok:encode(word) == 1 and 1 or 0)
        end
    end
end
print(string.format("%s: %d merges (vocabulary %d) from %d words (%d distinct); %.1f%% of the " ..
    "input's words are one token", args.out, #v.merges, v.vocab_size, v.words, v.distinct_words,
    words > 0 and 100 * whole / words or 100))
