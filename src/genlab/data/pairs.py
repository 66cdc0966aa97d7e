"""Text pairs (source -> target): translation and dialogue data, and their joint subword tokenizer.

Data sets (`data.name`):

    tatoeba-cmn     24,026 English-Chinese sentence pairs from Tatoeba (tatoeba.org, as packaged by
                    ManyThings.org; CC BY 2.0 FR), in the fixed 19,222 / 2,402 / 2,402 split of
                    Akyurek & Andreas 2021. `data.direction` en-zh or zh-en. 5 MB, checksummed download.
    sgd             Schema-Guided Dialogue (Rastogi et al. 2020; CC BY-SA 4.0): user/assistant
                    conversations, train/dev/test as published. Each assistant turn is a target; its
                    source is the turns before it, newest last, each after a speaker tag.
    pairs:FILE      your TSV or CSV of pairs, with a header line naming the columns
                    (`data.source_column`, `data.target_column`); any languages.
    dialogue:FILE   your conversations as JSON lines in the shape of sgd (below).

The fixed split. The published split files hold the sentences pre-tokenised (spaces between
Chinese words, contractions expanded, "Tom's" written "Tom is"), which is neither what a user
types nor what sacreBLEU expects. Each split line is matched back to its original line of cmn.txt:
by the Chinese side's letters and digits (every split line has a match), and where several
originals share that key, by the best one-to-one assignment of English similarity. The result is
a bijection (checked on every load), so the splits hold the original sentences, attribution intact.

Dialogue lines (sgd's converted file and dialogue:FILE), one JSON object per line:

    {"id": "1_00000", "split": "train", "turns": [["USER", "I want ..."], ["SYSTEM", "What city ..."]]}

Speakers USER or user, and SYSTEM or assistant (SGD's "SYSTEM" is the assistant); a turn may also
be {"role": ..., "content": ...}. "split" (train, dev or val, test) is optional: files without it
are split by whole conversations with a seeded permutation. A file without a split (pairs:FILE,
dialogue:FILE) is split by `data.val_fraction` / `data.test_fraction`; pairs that share a source
text stay in one split, so no test source was seen in training.

Examples, as token ids (special ids: <pad> 0, <bos> 1, <eos> 2, <unk> 3, <user> 4, <assistant> 5,
<sep> 6):

    translation source   tokens(source) + [eos]; too long: the START is kept
    dialogue source      for each of the last `data.context_turns` turns before the target, newest
                         last: [<user> or <assistant>] + tokens(turn) (with data.speaker_tags=false:
                         the turns joined by <sep>), then [eos]; too long: whole oldest turns are
                         dropped, then the END of the newest one is kept (the newest words matter)
    target               [bos] + tokens(target) + [eos]; too long: the start is kept, and eos

`data.max_source_len` and `data.max_target_len` count every id of a row, specials included. How
many sources and targets were truncated is reported once, when the data is loaded.

The tokenizer: one joint vocabulary over both sides, learnt by Hugging Face `tokenizers` from the
training split only. Candidates measured on tatoeba-cmn (trained on the train split, measured on
the test split: characters per token, higher is shorter sequences):

    vocabulary                                     8k: en   zh     12k: en   zh     16k: en   zh
    byte-level BPE (GPT-2 pre-tokenizer)               3.68 1.41        3.79 1.53        3.86 1.61
    BPE, Metaspace, Chinese runs                       3.91 1.43        4.22 1.61        4.38 1.71
    BPE, Metaspace, each Chinese character alone       4.24 0.90        4.56 0.90        4.68 0.91
    Unigram, Metaspace, Chinese runs                   3.55 1.37        3.68 1.50        3.74 1.60
    Unigram, Metaspace, each Chinese character alone   3.75 0.90        3.81 0.90        3.81 0.90
    BPE, Metaspace, punctuation apart, Chinese runs    3.68 1.34        3.88 1.48        3.97 1.56
    the same, and "▁" apart before Chinese (chosen)    3.69 1.22        3.88 1.33        3.98 1.38
    Unigram with the chosen pre-tokenisation            3.07 1.23        3.14 1.32        3.16 1.38

All of them round-trip every test sentence exactly. Chosen (`data.tokenizer=bpe`, 8,000 tokens by
default): BPE with NFC normalisation, SentencePiece-style Metaspace word boundaries, punctuation
and symbols split off words (an apostrophe inside a word stays: "don't", "Tom's"), Chinese left
in runs so that BPE learns words ("什么", "发生了"), and the word-boundary mark split off before
Chinese so a word at the start of a sentence is the same token as inside it. Against the best
compression ("Metaspace, Chinese runs") that makes sequences 6% (English) and 17% (Chinese) longer
at 8k, but stops "Tom." "Tom?" "Tom," and "▁你知道" "你知道" being unrelated tokens, which matters
with 19k training pairs. Byte-level BPE compresses Chinese about as well, but its tokens are byte
soup and it has no notion of an unknown character. Unigram (SentencePiece's other model) splits
English words more finely at every size. At 16k about 70% of the vocabulary occurs fewer than 10
times in the training text; 8k keeps the output layer small for CPU training.

Unknown characters: the 256 bytes are in the vocabulary (byte fallback, as in SentencePiece), so a
character never seen in training (a Chinese character outside the training text, Cyrillic,
Devanagari) is encoded as its UTF-8 bytes and still decodes exactly; `unknown_count(text)` counts
such characters. On the tatoeba-cmn test split 0 of 73,994 English and 97 of 23,461 Chinese
characters (0.4%) are unknown, at any vocabulary size (it depends on the training alphabet only).

Normalisation (the tokenizer's, before encoding; the texts kept as references are as read, with
outer whitespace stripped): Unicode NFC, the character "▁" (U+2581, the word-boundary mark) as a
space, leading and trailing whitespace stripped. Fullwidth punctuation ("？", "，") is kept as is:
NFKC would turn it into ASCII in every Chinese reference. decode(encode(s)) == normalize(s) for
any valid string s (tested with mixed scripts, runs of spaces, tabs, newlines and emoji).

Batches: each split is held as padded int32 tensors ([N, longest source], [N, longest target])
with the lengths; a batch is one index of those rows, trimmed to the longest row in the batch
and converted to int64: {"src": [B, S], "tgt": [B, T]}, right-padded with <pad> = 0.
"""

from __future__ import annotations

import gzip
import json
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..errors import GenlabError, warn
from .download import RemoteFile, data_root, ensure_files
from .text import read_tokenizer_file

__all__ = [
    "PAIR_DATASETS", "PAIR_TOKENIZERS", "SPECIAL_TOKENS", "PAD_ID", "BOS_ID", "EOS_ID", "UNK_ID", "USER_ID",
    "ASSISTANT_ID", "SEP_ID", "PairDataSpec", "PairTokenizer", "PairSplit", "PairData", "load_pair_data",
    "load_pair_examples", "pair_tokenizer_from_json", "load_pair_tokenizer", "pair_dataset_status",
    "translation_source_ids", "dialogue_source_ids", "target_ids", "read_dialogues", "parse_dialogues",
    "read_pairs_file", "render_turns",
]  # fmt: skip

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>", "<user>", "<assistant>", "<sep>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID, USER_ID, ASSISTANT_ID, SEP_ID = range(len(SPECIAL_TOKENS))
ROLE_IDS = {"user": USER_ID, "assistant": ASSISTANT_ID}
PAIR_TOKENIZERS = ("bpe", "unigram")
DEFAULT_VOCAB = 8000
BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))
SPLITS = ("train", "val", "test")
SPLIT_NAMES = {"train": "train", "dev": "val", "val": "val", "validation": "val", "test": "test"}
DIRECTIONS = ("en-zh", "zh-en")
DEFAULT_CONTEXT_TURNS = 4

PAIR_DATASETS: dict[str, str] = {
    "tatoeba-cmn": "24,026 English-Chinese sentence pairs (Tatoeba via ManyThings.org, CC BY 2.0 FR), the fixed "
    "19,222 / 2,402 / 2,402 split of Akyurek & Andreas 2021; data.direction=en-zh|zh-en; 5 MB download",
    "sgd": "Schema-Guided Dialogue (Rastogi et al. 2020, CC BY-SA 4.0): 22,825 user/assistant conversations, "
    "each assistant turn a target; 618 MB download of the 181 original files, converted once to a 5 MB file",
    "pairs:FILE": "your TSV/CSV of text pairs with a header line: data.source_column, data.target_column",
    "dialogue:FILE": 'your conversations, JSON lines: {"turns": [["USER", "..."], ["SYSTEM", "..."], ...]}',
}

# ----------------------------------------------------------------------------- remote files

# ekinakyurek/lexical at the commit the shared copy was taken from; sha256 as verified in
# shared/data/tatoeba_cmn/SHA256SUMS. The split files are named cmn.txt_<split>_tokenized.tsv there.
LEXICAL = "https://raw.githubusercontent.com/ekinakyurek/lexical/3956fa2a2dd976d99a94e8ad9ed8d3a6f65a5c78/TRANSLATE"
TATOEBA_DIR = "tatoeba_cmn"
TATOEBA_PAIRS = RemoteFile("cmn.txt", (f"{LEXICAL}/cmn.txt",),
                           sha256="6d9734ce952db2b694ac8a6abae52b445f8dbc6a599959b0971a2bc74eec1918")
TATOEBA_SPLITS = {
    "train": RemoteFile("split_train_tokenized.tsv", (f"{LEXICAL}/cmn.txt_train_tokenized.tsv",),
                        sha256="2fe353961739cab75bc34b8c987e64fa776eb83792adb0d94d868085b4cd4720"),
    "val": RemoteFile("split_dev_tokenized.tsv", (f"{LEXICAL}/cmn.txt_dev_tokenized.tsv",),
                      sha256="1246a1a9b26636b35bd7b997f871c5d0a486d7709f6e66c8dbd8b4621ea87b15"),
    "test": RemoteFile("split_test_tokenized.tsv", (f"{LEXICAL}/cmn.txt_test_tokenized.tsv",),
                       sha256="4ef83fb2586c0a88de9182144c9cbdf03a4ffc4dd0810a69609f7484e89bf8c5"),
}
TATOEBA_SIZES = {"train": 19_222, "val": 2_402, "test": 2_402}

# SGD: the converted conversations live in <root>/sgd_dialogues/sgd_dialogues.jsonl.gz (written
# once from the original files, or copied there by hand); the originals are downloaded to
# <root>/sgd/ from the pinned commit. Their sha256 are those Hugging Face `datasets` recorded for
# the same files (datasets/schema_guided_dstc8/dataset_infos.json), in file-number order.
SGD_DIR, SGD_FILE, SGD_ORIGINALS_DIR = "sgd_dialogues", "sgd_dialogues.jsonl.gz", "sgd"
SGD_REPO = ("https://raw.githubusercontent.com/google-research-datasets/dstc8-schema-guided-dialogue/"
            "e852981ae34990f4358979625854259302feaa78")
# The 137-of-181-file copy in shared/data (see its README): recognised, so its status can say so.
SGD_SUBSET_SHA256 = "7c86c4fdf63a4d722c720b95b6d81d3d07833696ea6090257a77842f8347fe8b"
SGD_SHA256 = {  # split -> the sha256 of dialogues_001.json, dialogues_002.json, ...
    "train": """
5ce28a6e656bc88c1da29c983d243d5a81eb37de92698da3864d1cf02894ca24
56a06f9762593b27f5b34225de4ce37da5e83c9c5747e56bca2899f147d88b3e
aae3d8d141c8c36bc5268ca573044b4e82d4534947c169d951a1f229b9852029
4f4aa821e01d7d9efd44c2e89264d37e428045e7058bf3b3c6be0eaec09eddce
e19563efc34dead580435331d39ec3183c79230fa361b2e2d79035af242dd90b
6b4829cb18185f063b81d271b847aa6915ef970cb592a2366edbec56d4b4c746
59adf47264e106df1ce4a59d2c88e95b5a12497e6f5e3e5464381c2a7526837c
36614c125ce310dd162b62d624b8bcd117053cf727978458b6c36b6592f6e757
d8cc086374bbce168a03169341687eaa9f886fe25f8b8dd5bd6832f6f441951d
d8658cd35bd4b6d274720d14308ec721f238d70cc37ea947c38f9d83a0267c1b
66f7eb72a46fa379d85e53ae607e5920a4fa14a4a99765d91ee67f3675fdf4d7
483b09fc9ad3d5b7285d2e1bc44057f1286ea3e73d7ff191fcec5e1acb364412
c6592a97753a8d3be8bae0099b3877e21f293a12d8daf9bcdcbec7289d5f1be3
5cd6cc68c676a2546a3312eda0f29be170ab5f0d6c602c9548ffa2c095037c7b
b698e8db9b0898186453ec9fcec5f80ab043cfe301447d28dc577e99bd3acfd3
5a7d85a3058f38bf40290782721865c3d816f43841e0cd302b21167eefecf449
0eb666f375ba2cc6362c88c02cfd255b702a2b8216e30fce200f630bcca99fa0
ceadf059b7c4ec5e31b7b53ee696198c7a5baa2ff03544b81b4adbe9cb7eca05
96adb06dd0605bb3536bc5e795d045d745a035e9d1c2ed05f7e89937fe883fb9
b2a3cd6d8e677c6a9d342f5703a947525b17b906348cd944a4da1c449ff4f3a4
f13f15b1b62f62d4ae6b71db4f37a1843861d8c1c8907fd0fde19451c08576e9
01a403f462a62b324f94de598c279b5adbaee55ac10c7aed72d798aa5924c510
73bf6f4be084de8fafa347257f39cf7c312bc488178dd2ce667f6e5f8baddb82
fc951b44990efac041bbbd993172b954d3d55af8230a00ce78ba8bbd50daf82a
8305b0d85317d77c5b6ebf128ba4d5e2410e248071a49eb2e05b1ee347c1833d
2b2e2c497c870d39c575892c7aae38b08cd4e39bd3a795be1e8550330e747800
63b5dd62e100afa001b596cda967f5bc86f93dc1072bd00bdc57a198ff691268
225af9eebcb34f90ab1c9634c5771c9e6179019fdb903884ff70a5833b77620c
87b61fd3495d851df7fa66ce43084431a7cd19154c1de32c0d6949bf6c74bae9
82b282eb98a4a26832b5e87d85fdfa8e19b1073a5a903123f7a28d056c4ec2b7
45e31767734dc89d825b8f84c37fdd258250bb1e0b63d8a8e775c99dde07547e
70a0916baba1e2fbeaef8bc8c2086cd3f31555a8eaec6d0eed80e483ed2b9a59
74c23ae93203ed5672015ce13d01c01d80d4f3a3ccd64c8f62f52e0b7c411871
782a499577aba5dc0f11edb6ed803cb8023bd4828a914cb4ff712966604e36cb
d6cf92ad829d275f15a62409ab8d24187a5e120b09d8f545d16d898ed4a36fd7
34223f6b06febfc5b86b0b20324e98b42e9ab4ca7e9c9797c6ba4e49e86e5cce
6e6bd6787f30640305ce0dc1b1dac8fa3d9b53ab0dd28c224519ff727cea916f
936ee784006908d323d558b84e1646dd932a3b4978bc03deafa1da6e2776e6f0
155da94cb95bdbc95e52062459e46b98cce4c8e049b956c5f285ce7a821a08c3
c807c28a3d1dbbe8ecaddd96ed97ac7b67918b12181e07eb89fb046ef6084891
d24455e00ea88b20a94cfd54581b30b224c207b20a197484ef9b27022af47f05
51d94d5d602cbf51c819c8f79a25f45174ebc3191c8ea3b2278d5b6c96742d51
98c9cc7865bc70e67123cc4e64daad8843d5750552bae2559d7bb95aae782c0a
8d3024399540122bef422925f2508ead00bcd85e4f07e16236de87747555fe5f
056df88c7bbff91bcc9b8fe009bfc6f01400aa59feae549cace7d5caa823dcb0
79c92a6fbb92481deb5fe00127359c6029724b49ade4913704a08ce397938eeb
fbe4e810316077148a2d96c8197928486a547946b44b9fce96eafa4f6fa4e0e7
882d7c255da334163b024a6fd511c5eaeedfd507da4db350e4ed2cde393cc787
fa48932032d150414a97d12f9cde4d1ac00bcc593bb30c43a45f2b802f293ed5
40543b657e832ab34b4bb4733ecbf1e7d1f15566674e49191c70261d29490aba
e8eef63422e756f420c60ddfd3bcae3fc5caddf3370c31fa7fa3648a3579bbdc
6736abeb95425a570f6ae5b1dd75967849957cabbdc550a9372a9a7646aba898
2825a26dbed8e7aba44677fd2f387d131991921506a5c8647a75c1c905571491
68e7ed4999fc4f21615e9f61a613309ab0560ed53e5e5837ccb96956ee2c5c2f
c1e4d78a6137b9e3232f0d8a0045f81ac0bbda937cc6187621406f6279885034
b4c4293c6cc1eea766025b0ba658e52070d6ef743afb73b1fb5531d280776977
7586422916e6f7c943b97b304f2724e6eefbe4ee1dd42b9d45413c1fc457cfc2
7ff43d0030fa5f32eb92aa87f3b4086d760d55ebefe0318b17ccf6c11795556e
d5597d0c8e9a904aeeb722e8d8c3a8d15a92eacf1713241fe9c05bd470b625a5
12d510c5644954820f48eb80601d599722672f6759aefdd7774d55d6b509f333
1b1b9c6c8a8113f49e18998512f7d5fea2141be7bec48aac201f306586ac15ce
4c4d76ffc33419e835087d081ff1d469f0b9e65b8d5c372b43d4680c286bbd45
ab015c005d3e1d26bdcd970aee1992d7084453d57f82e2be9795846157eb8fa9
ac2fac08f9f1673be6bd1cf6cec44dbd8d35861f658567313ef8d7b7f8c1908c
a9bd32fb9cce88b4bd0a4a11b136423401ba6e14fb5be306fe1eda9e485e8760
9b6145e988296f133c5414db17798098b97ef01bda44b7b1740ade97c268770e
d16cfeda3585639f9ccbac0b5d1fa5c755d9b87bafa95ac737ddd40d7b1fe7a7
ba2f245f26ba2c13463d34f8a8d1635347974a9f0e423bda53ca4bc15fb82a17
319035b2843a089f352f2e7fbb06544c7d68d86ebbba57ebc3bbf3725c07a9cd
ca37b41fefd5af07b4d9fba75c3268d6831f2ce49f5bf4e6d5412e39c764f0a8
59a78ab61ef8e419c7c2791e028db3704254a196f73e79a890274f09e7e65801
c0e8dd91f70c150ef02118b15152da7f973dcf261112a1604bfa4823d276829c
e2b9aa0843a8cdfabaf24fecae2bf4b280ea8aed75670d6e955d25df58dc8494
0c4fd25b8d66f46ee5a8332410a093473dc57655e1edc2e59ec1d53e2e1a7756
4e1ce624c664a402ee31f69083fc263346aef3ed70d866dc940f4565c1c3e9b8
72567237e51a2282a34d66acbc6beeb23b400f29da404d98de6f796686c720ec
2ec1a3ed1a85498992f4fcfecbd8e9a6b4a72968b8da4cd3502d170edffd9437
288a96936c4426a40e50eb6e220a93cce32177827b416f656c4c78e43aebad16
a2817b6b744c4a03fb4f5cf36100a233ea0af7d96b784b237ea9ab1dd3dd4aad
4b166ba32851d5164271d83ed671135682c344aca1ffa4095c1b38cd63a89600
b34c8b63682242361d30ca5ced6d1a55719f4ed8f151f2a52854b61831e5a45c
11751fd14c9580880d1b3157e10103477cd9a7333a689eda89c6f00a21660da6
c4b2d5f1bbdbe6b53fd96d3fde936c66ecfe35674cae3c79e207c0b1c397616e
f728459cbdbb4f69f87dfbc00af0584b9a44b841a568717e7dab7c3146f492cb
f22be96c2ff0a95c4c883a64f9677e0a0106fac25ea42a523df91700ead7bfa3
c1ebb9b572cd00cc4ec09e7ad775aadec6310e2fe1cc064e0ed18480992a04a4
1b95dda470d3f0809bbbeb86cb99a9a322a81fd1a96e96735d953d5409331810
cbb055520fdd1d7cfffe7b911829a00774cc8190c2d07cb29787cca7f5d51fbf
357d12d7b5fcc9a2414cafc3a9bf6b31449b1f11474d16be5b7747e1999423b4
78310f5e8e4c5a48cb600d36ba762448d13ab15e820aa5f56cc6f25994b6902a
c80f229312047567f61db69223c79e1921662f88f63f9718a1ec51b5204612b0
b9656f9135cefd1fe1bd175f4b45d74c2c2a558137a1f2d509771ccf7e8aff4b
fb6ec8f4c975d7bf7e5a18645ef16614a393dab96e623074410ff5bd9a60d8ca
309f412040022ca48c75c7b980fd65ff3f93e9c486305e2cd29a2bafbb57d7b0
0411f940d9e3f659c6ab1037e14094612d088b9ee98a62043658fe1b76fa700f
8d004b5c6a865428bf25093356f46a0a84b4bd3b749f4172f9d0e606a6d70217
ac32e0ccd38e439655ef8a6fc5436e5d14c5dbcf44faeb1fac48b17e3a7bad34
b08094174ff819f259ea64c199e8d3c5141006b11e00b428be21d5b7e452bc0b
fb7110d90b179fe43eaee15393422ae7fb0d522190a69495023f0cf9cadebcbb
4cdafb648909b34c0f609e61f5c4db5511a880e3d4ba7c726bf4e78e3fe09590
142dc7b5452d6aaafb25fa9637b3f5126ac83194b907016af5e85659220d9cba
15da667bc211a0abb82203184c09e19756cff59feecf1e8578632854254af05e
8c5b4c3df6b7fb43e74b745bca2cfff0b2555be20d13859e6c6c502bb1f27326
4e02e3fc67c89d50365feaa2a1424bf5a8de5edaef02f3191cc35cf46918f8b2
fdf5795a36fe9b59721df5a3d35fe37efdc5d555573ee4f9a939409d737c7376
98b72cb9cea0b320fbc58e80977d48879005159156d4e7c19b7905a6723f3d5f
ae315294f293e65edbdd58f0476c8693605a791872db840788e334f637df9b4c
584a1c096b49fac0b66d8ba08f39ca2cef41d93c98851f1b10e86cf995170b1e
ec28252137a7ceae1a3843bf39d3c9a78a4bd139b13c70165982b0c05c391502
48f2d6256d96385350e1b58e7cc3b499f1be78584790250e89d9d0d11cc03dd0
740087b7e2a5305c4ef16a7227dcc61f9af3cf054690ee682a823070a9e2b2c1
0120d9160a30b1b15c21613122250d2a036609b0ba1e3ed33b5b396c4161e10d
895cbdca09acff80c6a194dc44a293fd6875390ad5899720bc98f004eca7d99b
619616f5a4d46200105dc2ea3ce1b1c131051edf57ca64b495f693cd8eafb4f4
3bb6c375846127053c01d51a0e6509eddfaad47f6d2a2bb3a7cfee65120bec32
c0c409d8a0cf74e37a59d1843680501c245f91f9b28fea79c15a1e66195906ef
b84563e3e581a1da03e48b780de326ad68f3004d225509d6ae89ea84b271a4c4
f8116cfa196a5e43b94c6c3657d8cf4e62c112a2f683d179ade4f13baac588fc
b374904ff28881f08e7212296848c0bf9cc18a45195f4d982123f27aa3bd3a23
d4565f5378c2205129b0c0a1feada548a62220c0a8e2b1caf6d234ffe463eab3
952e6284dbacb2bebca8ba36ac3c942edb50d248b2395706facf6c95f3b84d1c
d4d3b718ac0527099412df7774c873939060d65e82b09ba6a1bec593f5559349
469b268f44aad6fb2bba4d271163d6c774234a80123e66204357b37d0619e2c2
8dd0418beb880f5f021c8466fc92233ef5992e8adcc6380a180f4107dfccf7f1
45d59601652c9b648175125718b55e5d65b3567c09518c9d054f67bdc8b2eaba
ae4c17bab75be5eb1ec8738dedd72bd5d33657243068e657642259c8091269ac
ba42de75a55e27a239b238d94ece3c98e5b64a755e155a027d8a31e5fbf791dc""",
    "dev": """
fe3a8ed9e160c15e20e7cfd16d03734b4473df0d3864f2ad687ea9eeee5eea52
fcbc8ba411ed8b3e0b06dff31819dc366f6bc6d228e021053920365e11004b03
5915cea36b77de920fbd66569333db2395626ec465ba23e2f0caa77fba2e5dae
d379a5149a86304a22162531e122ff9a7b8e9e46178789a5170e0a7091dd2bbf
107d8bc1ce21b06453f33cc8dfc19172e0956646b47d9c1db7bdcd978a323d73
20140828f25496461003140b67a5987d954109d9e14e12e472ed565ed2843bc3
d9af6ffcb69257ab3ce10e4637fc4d45d268094e55693b170a9b5b9d914dc611
986264c54cfabb8c70ace72e209ff0cd000523daecde226b19b3dbd6f44ea09b
92479f0285dcb5db0d50f51b27a86aa0368a62214c575ad5cdd74299372fa71f
76d9ff1656e8cad2287cd5cd44bb8e18df0bd8cc7d3340543e1980b61241d3f8
7f034dd1bc18e75fc21077dd6270f8e1f51d97fad80b4e6069dbbe28c3ebdd41
9228d58681e3b98db2e7c6a9bef86994718455e3a7d4c7584b6ac53bc35969d3
a62cf6bddd52beae0980ecdedf312373976425a9302fb0da79af1270b28b16e1
aca7316a63a215bcdeb95189c2e3259f50cd29da9a77deaa264b92ba737b8e95
8d8d7b25c21e4a24ed5b3adf0310a66124496f6d3d9a962ca2e77a29eac0f51a
36ed533dd0e0b8f178a0aa9ea70a12d7fa3ab042ec4959061aa70b391b92785c
50da6ef54acf2cdf630ec99f75fa7fca33bc41683c10d2a4540b4c94a081c11a
debc2d37540a4cebb1ff0e1a0b14eb55accd55071c21dbb2c2624bf978d82d3a
2e3934d15b5e0b8d47b0018845fb6fb6b1f5d8f480e1788ea67d934aaa2179eb
7e022ed5e4c972d607e71e46baeb0b79f57967d5e6de4a4fb28a99a1ed30d9c3""",
    "test": """
1fa13b0fe607100bc66ed15e0490df9c52a2cec087ca9733e0f506755eef0ada
b3b2a2596fad9146e96e4e1aa288f975332e2c7a3153bb2379d75e8d71c35a20
b595a04f7848aed76d11e82250089023e42a6e5ce047c78b8ddd0f4856dcbecb
5468f85dd867c7cc825aa6918980dd3142c95c926d685a56803b91cd2d3eb379
9f344d5660b5d8bf6935f72cf4dc11149caaf9febf688fd748eacbe262c67c2b
249d591df0c32b5518560c37a02cdc09b147ea4f95d1373ac22d42c656788ab7
24c5c86501aa50d045f4ba8822bf06606967261365fc5ca6ffa8f7375bd54935
e4ecce8acdd5b3657de7a7660b9bcd339d88a629147711ad2545b695666279c5
5d30edca006e4b4159a8027d68c3bcd241447d2257deb51b467b9aeefa7b1158
b4fc2c16d0cb46e14d0def357f4a941ee61fad3c6c8dd430ac8bae6145f1e4d0
1c2e312ce653bdd4ba1fe74b44ef20b36bab74b8ccf7bc2e591c632d5492a21b
30ccd033dfeb5032cb74ca237ee4679fb00abf9b2e21b0c686da543ec3ac8ca6
b31c288da94b084e4963e7eda27e11922c7c230e9de0bb159856facb442684bc
52c79021d28c2bb2bb69210f360c61c49250696eaf1b04fdfa89e1fd9a7be2c7
4e14295fac05ce179d72ec30b67f6b01e24e2d4c4836b95cc842d8ae4a93131f
b0515e87357d8537df046a38d2418257b38e16e9df1a960c9de2bd3d21e19c8b
ec669b6b24667e01033069827200312b9af4a182789a15784c43b4be5cf0668e
51e761019af71be0558667b69d917b120def65b6434f019e7e0c95584ad7fdbc
2bf4a842c133c427beb7162408488f39ab04cc8e7178ff51c489b41678652834
9619574d5043827ea2e397702b88033dc013e4ac870f410a8016c8b223f55ec4
7259172a6ba19f5d065fe95b4ae41755c6ac32cf2fec80fae6d52d94b8a10a1d
ffed1c89eb5c589c159b70062433e0655c5955ef9f1dd0b3c0e4ddb1db9ac74b
c3466bc38d356b2abb6a71e61f502e0b5c82cf35584b3c655d01a89165e8fe80
728b605675f7d4da54dfe8c3746eabfdec884f75c9306f5cdb3d8eb3ab315e5c
50e8aa3052aa720279068de31d7c7225d08b035ac62e488aadca0e1edd39145d
981946b39930b73c78b63af1ec220c71b15e24529f24b48d435f917a1375ff7d
d05108c80386d35891f511a425e4a194a22a74c22a14d3f12e3b7a54252c4f96
8548c8881eb5445ec8f9d8877ada1371c4698890ec76c96408929957d36b4d79
97fd99e95c0d5169f57e85a7799214de7bf7495d3613652a6ac8a494f10021fb
dabf6b8051f03ad1049a4c6b89f48986a5d597d0e637ccf555faa0241ecdbe87
c78c04a16cde6eccbd4092d70d7e6053651e4bdab89a993a4dafa78eedf47c0f
b7b739ccdd51ce4cd60d0b4d4ccaa751831bf448965e9bacfe5b7a123bc0f806
a9f5b0c275a55ba40374ea10c723e88c37b8f0dabd55c2a9d3679de2495e224d
d412ac423182dfe367d1549be9580bd7a964b695f5fd1a4d9d77c849763294a9""",
}
SGD_FILES = {split: [RemoteFile(f"{split}_dialogues_{i:03d}.json", (f"{SGD_REPO}/{split}/dialogues_{i:03d}.json",),
                                sha256=digest)
                     for i, digest in enumerate(text.split(), start=1)]
             for split, text in SGD_SHA256.items()}


# ----------------------------------------------------------------------------- the spec


@dataclass
class PairDataSpec:
    name: str = "tatoeba-cmn"  # tatoeba-cmn | sgd | pairs:FILE | dialogue:FILE
    direction: str | None = None  # tatoeba-cmn: en-zh | zh-en (default zh-en)
    source_column: str | None = None  # pairs:FILE: the header name of the source column (default "source")
    target_column: str | None = None  # pairs:FILE: the target column (default "target")
    delimiter: str | None = None  # pairs:FILE: one character; None: tab for .tsv/.tab/.txt, comma for .csv
    split_column: str | None = None  # pairs:FILE: a column naming each row's split (train, dev/val, test)
    context_turns: int | None = None  # sgd, dialogue:FILE: turns before the target in its source (default 4)
    speaker_tags: bool | None = None  # sgd, dialogue:FILE: a <user>/<assistant> tag before each turn (default on)
    tokenizer: str = "bpe"  # bpe | unigram: a joint subword vocabulary learnt on the train split
    vocab_size: int = DEFAULT_VOCAB  # tokens in all: 7 specials and 256 byte-fallback tokens included
    max_source_len: int = 128  # ids per source row, <eos> (and speaker tags) included
    max_target_len: int = 64  # ids per target row, <bos> and <eos> included
    val_fraction: float = 0.05  # pairs:FILE, dialogue:FILE without a split: held out for validation
    test_fraction: float = 0.05  # ... and for the final test
    limit: int | None = None  # keep at most this many examples of each split (a seeded sample), for quick runs
    group_by_length: bool = True  # training batches of pairs of similar length (see PairData.order_batches):
    # a random batch of Tatoeba pairs is half padding, so grouping doubles the real tokens per second
    seed: int = 0  # the split of files without one, and the sample `limit` keeps

    def __post_init__(self):
        kind = self.name.partition(":")[0]
        known = ("tatoeba-cmn", "sgd", "pairs", "dialogue")
        if kind not in known or (kind in ("pairs", "dialogue")) != (":" in self.name):
            raise GenlabError(f"unknown text-pair data set {self.name!r}",
                              "use tatoeba-cmn, sgd, or your own pairs:FILE.tsv / pairs:FILE.csv / dialogue:FILE.jsonl")
        if kind in ("pairs", "dialogue") and not self.name.partition(":")[2]:
            raise GenlabError(f"data set {self.name!r} needs a path after the colon",
                              f"for example {kind}:/path/to/file")
        self._only(kind == "tatoeba-cmn", "direction", "tatoeba-cmn")
        for key in ("source_column", "target_column", "delimiter", "split_column"):
            self._only(kind == "pairs", key, "pairs:FILE")
        for key in ("context_turns", "speaker_tags"):
            self._only(kind in ("sgd", "dialogue"), key, "sgd and dialogue:FILE")
        if kind == "tatoeba-cmn":
            self.direction = self.direction or "zh-en"
            if self.direction not in DIRECTIONS:
                raise GenlabError(f"unknown data.direction {self.direction!r}", "use en-zh or zh-en")
        if kind == "pairs":
            self.source_column = self.source_column or "source"
            self.target_column = self.target_column or "target"
            if self.source_column == self.target_column:
                raise GenlabError(f"data.source_column and data.target_column are both {self.source_column!r}")
            if self.delimiter is not None and len(self.delimiter) != 1:
                raise GenlabError(f"data.delimiter must be one character, got {self.delimiter!r}",
                                  "e.g. data.delimiter=; (a tab is written \\t in YAML)")
        if kind in ("sgd", "dialogue"):
            self.context_turns = DEFAULT_CONTEXT_TURNS if self.context_turns is None else self.context_turns
            self.speaker_tags = True if self.speaker_tags is None else self.speaker_tags
            if self.context_turns < 1:
                raise GenlabError(f"data.context_turns must be at least 1, got {self.context_turns}")
        self._check_numbers()

    def _only(self, applies: bool, key: str, where: str) -> None:
        if not applies and getattr(self, key) is not None:
            raise GenlabError(f"data.{key} applies only to {where}, not {self.name}", f"remove data.{key}")

    def _check_numbers(self) -> None:
        if self.tokenizer not in PAIR_TOKENIZERS:
            raise GenlabError(f"unknown data.tokenizer {self.tokenizer!r} for text pairs",
                              "use bpe (default) or unigram")
        floor = len(SPECIAL_TOKENS) + len(BYTE_TOKENS) + 64
        if self.vocab_size < floor:
            raise GenlabError(f"data.vocab_size must be at least {floor} (7 specials and 256 byte tokens included), "
                              f"got {self.vocab_size}", "a typical value is 8000 to 16000")
        if self.max_source_len < 2 or self.max_target_len < 3:
            raise GenlabError(f"data.max_source_len must be at least 2 and data.max_target_len at least 3, got "
                              f"{self.max_source_len} and {self.max_target_len}", "typical values are 128 and 64")
        if not 0.0 < self.val_fraction < 1.0 or not 0.0 < self.test_fraction < 1.0 \
                or self.val_fraction + self.test_fraction >= 0.9:
            raise GenlabError("data.val_fraction and data.test_fraction must be in (0, 1) and leave text to train on",
                              f"got {self.val_fraction} and {self.test_fraction}; typical values are 0.05 each")
        if self.limit is not None and self.limit < 1:
            raise GenlabError(f"data.limit must be at least 1 (or unset), got {self.limit}")
        if self.seed < 0:
            raise GenlabError(f"data.seed must be >= 0, got {self.seed}")

    @property
    def is_dialogue(self) -> bool:
        return self.name == "sgd" or self.name.startswith("dialogue:")


# ----------------------------------------------------------------------------- the tokenizer

# Scripts written without spaces between words (Han, kana, CJK punctuation, fullwidth forms): the
# word-boundary mark before them is split off (see the module docstring). Real characters, not
# escapes, in the pattern: the regex engine of `tokenizers` reads them as they are.
NO_SPACE_SCRIPTS = ("[\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u31a0-\u31ff\u3400-\u4dbf"
                    "\u4e00-\u9fff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0003134f]")
METASPACE = "\u2581"
# Punctuation and symbols, each its own piece, except the word-boundary mark itself and an
# apostrophe between letters ("don't" stays one word).
PUNCTUATION = f"(?!{METASPACE})(?!(?<=\\p{{L}})['\u2019](?=\\p{{L}}))[\\p{{P}}\\p{{S}}]"


def _pipeline(model):
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers

    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(METASPACE, " "),
                                                 normalizers.Strip()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="first", split=True),
        pre_tokenizers.Split(Regex(f"{METASPACE}(?={NO_SPACE_SCRIPTS})"), behavior="isolated"),
        pre_tokenizers.Split(Regex(PUNCTUATION), behavior="isolated"),
    ])
    tokenizer.decoder = decoders.Sequence([decoders.Replace(METASPACE, " "), decoders.ByteFallback(),
                                           decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    return tokenizer


class PairTokenizer:
    """A joint subword vocabulary for both sides of text pairs (Hugging Face `tokenizers`).

    ids 0..6 are the special tokens (SPECIAL_TOKENS), never produced from text: "<eos>" typed by a
    user is the five characters, not the id. The last 256 ids are the bytes <0x00>..<0xFF>, used
    for characters the vocabulary lacks.
    """

    def __init__(self, tokenizer, kind: str):
        self.tokenizer = tokenizer
        self.kind = kind
        for i, token in enumerate(SPECIAL_TOKENS):
            if tokenizer.token_to_id(token) != i:
                raise GenlabError(f"this tokenizer does not have {token} at id {i}",
                                  "the tokenizer.json is damaged or not a text-pair tokenizer")
        self.byte_base = tokenizer.token_to_id(BYTE_TOKENS[0])
        if self.byte_base is None or tokenizer.token_to_id(BYTE_TOKENS[-1]) != self.byte_base + 255:
            raise GenlabError("this tokenizer lacks its 256 byte tokens", "the tokenizer.json is damaged")

    pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID
    user_id, assistant_id, sep_id = USER_ID, ASSISTANT_ID, SEP_ID

    @classmethod
    def train(cls, texts: list[str], vocab_size: int = DEFAULT_VOCAB, kind: str = "bpe") -> "PairTokenizer":
        """Learn the vocabulary from `texts` (the training split's sources and targets)."""
        from tokenizers import models, trainers

        size = vocab_size - len(BYTE_TOKENS)
        if kind == "bpe":
            # The rarest characters beyond the vocabulary's room are left to byte fallback.
            tokenizer = _pipeline(models.BPE(unk_token="<unk>", byte_fallback=True))
            trainer = trainers.BpeTrainer(vocab_size=size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                          limit_alphabet=size - len(SPECIAL_TOKENS))
        elif kind == "unigram":
            tokenizer = _pipeline(models.Unigram())
            trainer = trainers.UnigramTrainer(vocab_size=size, special_tokens=list(SPECIAL_TOKENS), unk_token="<unk>",
                                              show_progress=False)
        else:
            raise GenlabError(f"unknown text-pair tokenizer {kind!r}", "use bpe or unigram")
        texts = [t for t in texts if t]
        if not texts:
            raise GenlabError("there is no training text to learn a vocabulary from")
        try:
            tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
        except Exception as e:  # the Rust side raises plain Exceptions
            if "not large enough" not in str(e):
                raise
            chars = len(set("".join(texts)))
            raise GenlabError(f"data.vocab_size={vocab_size} is too small for a unigram vocabulary of the training "
                              f"text's {chars:,} distinct characters (a unigram vocabulary holds every one)",
                              f"use data.vocab_size={chars + len(BYTE_TOKENS) + 1000} or more, or "
                              "data.tokenizer=bpe (which leaves the rarest characters to byte fallback)") from None
        return cls(_with_bytes(tokenizer, kind), kind)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def normalize(self, text: str) -> str:
        """The text as the tokenizer sees it: NFC, U+2581 as a space, outer whitespace stripped."""
        return self.tokenizer.normalizer.normalize_str(_valid(text))

    def encode(self, text: str) -> np.ndarray:
        """int32 token ids of `text`, no special tokens."""
        return np.asarray(self.tokenizer.encode(_valid(text), add_special_tokens=False).ids, dtype=np.int32)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        encodings = self.tokenizer.encode_batch([_valid(t) for t in texts], add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int32) for e in encodings]

    def decode(self, ids) -> str:
        """The text of `ids`; special tokens (padding, <bos>, <eos>, speaker tags) are left out."""
        ids = ids.tolist() if isinstance(ids, (torch.Tensor, np.ndarray)) else list(ids)
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise GenlabError(f"token id {bad[0]} is out of range for a vocabulary of {self.vocab_size}")
        return self.tokenizer.decode([i for i in ids if i >= len(SPECIAL_TOKENS)], skip_special_tokens=False)

    def unknown_count(self, text: str | np.ndarray) -> int:
        """How many characters of `text` (or of these ids) the vocabulary lacks: each was encoded as
        its UTF-8 bytes. Counted as the byte tokens that start a character (not 0x80..0xBF)."""
        ids = self.encode(text) if isinstance(text, str) else np.asarray(text)
        byte = ids.astype(np.int64) - self.byte_base
        return int(((byte >= 0) & (byte < 256) & ((byte < 0x80) | (byte >= 0xC0))).sum())

    def unknown_characters(self, text: str) -> list[str]:
        """The distinct characters of `text` the vocabulary lacks, in order of first appearance."""
        vocab = self.tokenizer.get_vocab()
        seen: dict[str, None] = {}
        for char in self.normalize(text):
            if char != " " and char not in vocab:
                seen.setdefault(char)
        return list(seen)

    def to_json(self) -> str:
        return json.dumps({"genlab_tokenizer": "pairs", "version": 1, "kind": self.kind,
                           "special_tokens": list(SPECIAL_TOKENS), "tokenizer": json.loads(self.tokenizer.to_str())},
                          ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict, source: str = "tokenizer.json") -> "PairTokenizer":
        from tokenizers import Tokenizer

        damaged = "the file is damaged; restore it or train the model again"
        if data.get("genlab_tokenizer") != "pairs" or data.get("kind") not in PAIR_TOKENIZERS \
                or not isinstance(data.get("tokenizer"), dict):
            raise GenlabError(f"{source} is not a text-pair tokenizer", damaged)
        if data.get("version") != 1:
            raise GenlabError(f"{source} is a text-pair tokenizer of version {data.get('version')!r}, not 1",
                              "it was written by a newer genlab; upgrade genlab")
        if tuple(data.get("special_tokens", ())) != SPECIAL_TOKENS:
            raise GenlabError(f"{source} has other special tokens than {', '.join(SPECIAL_TOKENS)}", damaged)
        try:
            tokenizer = Tokenizer.from_str(json.dumps(data["tokenizer"]))
        except Exception as e:  # the Rust side raises plain Exceptions for malformed files
            raise GenlabError(f"{source} is not a readable tokenizer ({e})", damaged) from None
        return cls(tokenizer, data["kind"])


def _with_bytes(tokenizer, kind: str):
    """The trained tokenizer with the 256 byte tokens appended to its vocabulary (byte fallback),
    and the special tokens kept only as ids: no longer matched in text."""
    from tokenizers import Tokenizer

    data = json.loads(tokenizer.to_str())
    model = data["model"]
    if kind == "bpe":
        vocab = model["vocab"]
        for token in BYTE_TOKENS:
            vocab.setdefault(token, len(vocab))
    else:
        pieces = {piece for piece, _ in model["vocab"]}
        lowest = min(score for _, score in model["vocab"])
        model["vocab"] += [[token, lowest - 10.0] for token in BYTE_TOKENS if token not in pieces]
        model["unk_id"] = UNK_ID
    model["byte_fallback"] = True
    data["added_tokens"] = []
    return Tokenizer.from_str(json.dumps(data))


def _valid(text: str) -> str:
    if not isinstance(text, str):
        raise GenlabError(f"expected text, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise GenlabError(f"the text is not valid Unicode: {e.reason} at position {e.start}",
                          "lone surrogate code points cannot be encoded; check how the text was read") from None
    return text


def pair_tokenizer_from_json(text: str, source: str = "tokenizer.json") -> PairTokenizer:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise GenlabError(f"{source} is not valid JSON ({e})", "restore the file or train the model again") from None
    if not isinstance(data, dict):
        raise GenlabError(f"{source} is not a tokenizer", "restore the file or train the model again")
    return PairTokenizer.from_dict(data, source)


def load_pair_tokenizer(directory: Path) -> PairTokenizer:
    return pair_tokenizer_from_json(*read_tokenizer_file(directory, "a text-pair model"))


# ----------------------------------------------------------------------------- ids of one example


def translation_source_ids(tokenizer: PairTokenizer, text: str, max_len: int) -> tuple[np.ndarray, bool]:
    """tokens(text) + [eos], at most max_len ids (the start kept); and whether it was cut."""
    ids = tokenizer.encode(text)
    if len(ids) == 0:
        raise GenlabError("the text to translate is empty", "give some text (whitespace alone does not count)")
    return _source_row(ids, max_len)


def _source_row(ids: np.ndarray, max_len: int) -> tuple[np.ndarray, bool]:
    cut = len(ids) > max_len - 1
    return np.append(ids[: max_len - 1], EOS_ID).astype(np.int32), cut


def dialogue_source_ids(tokenizer: PairTokenizer, turns, max_len: int, context_turns: int | None = None,
                        speaker_tags: bool = True) -> tuple[np.ndarray, bool]:
    """The source of the next assistant turn after `turns` ((role, text) pairs, roles "user" and
    "assistant", newest last): the last `context_turns` of them, each tagged, then [eos]; at most
    max_len ids. Whole oldest turns go first; if the newest alone is too long, its end is kept.
    Returns the ids and whether anything was cut (turns beyond context_turns do not count)."""
    turns = list(turns)[-context_turns:] if context_turns else list(turns)
    if not turns:
        raise GenlabError("the conversation is empty", "give at least one user message")
    wrong = [role for role, _ in turns if role not in ROLE_IDS]
    if wrong:
        raise GenlabError(f"a turn has the role {wrong[0]!r}", "use user and assistant")
    encoded = tokenizer.encode_batch([text for _, text in turns])
    return _dialogue_row([role for role, _ in turns], encoded, max_len, speaker_tags)


def _dialogue_row(roles: list[str], encoded: list[np.ndarray], max_len: int, tags: bool) -> tuple[np.ndarray, bool]:
    pieces = [np.concatenate(([ROLE_IDS[role] if tags else SEP_ID], ids)) for role, ids in zip(roles, encoded)]
    if not tags and pieces:
        pieces[0] = pieces[0][1:]  # <sep> goes between turns, not before the first
    budget, kept = max_len - 1, []
    for piece in reversed(pieces):
        if len(piece) > budget:
            break
        kept.append(piece)
        budget -= len(piece)
    cut = len(kept) < len(pieces)
    if not kept and pieces:  # the newest turn alone is too long: its tag, then its last tokens
        newest = pieces[-1]
        head = newest[:1] if tags else newest[:0]
        kept = [np.concatenate((head, newest[len(newest) - (max_len - 1 - len(head)):]))]
    body = np.concatenate(kept[::-1]) if kept else np.zeros(0, np.int32)
    return np.append(body, EOS_ID).astype(np.int32), cut


def target_ids(tokenizer: PairTokenizer, text: str, max_len: int) -> tuple[np.ndarray, bool]:
    """[bos] + tokens(text) + [eos], at most max_len ids (the start kept, and eos)."""
    return _target_row(tokenizer.encode(text), max_len)


def _target_row(ids: np.ndarray, max_len: int) -> tuple[np.ndarray, bool]:
    cut = len(ids) > max_len - 2
    return np.concatenate(([BOS_ID], ids[: max_len - 2], [EOS_ID])).astype(np.int32), cut


def render_turns(turns) -> str:
    """A dialogue context as plain text, one "User: ..." / "Assistant: ..." line per turn."""
    return "\n".join(f"{role.capitalize()}: {text}" for role, text in turns)


# ----------------------------------------------------------------------------- examples


@dataclass
class RawSplit:
    """A split as text: sources, targets and, for dialogue, each source's turns ((role, text), newest last)."""

    sources: list[str]
    targets: list[str]
    contexts: list[tuple] | None = None

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, keep: np.ndarray) -> "RawSplit":
        pick = keep.tolist()
        return RawSplit([self.sources[i] for i in pick], [self.targets[i] for i in pick],
                        None if self.contexts is None else [self.contexts[i] for i in pick])


def pair_dataset_status(name: str, root: Path) -> str:
    root = Path(root)
    if name == "tatoeba-cmn":
        files = [TATOEBA_PAIRS, *TATOEBA_SPLITS.values()]
        return "present" if all((root / TATOEBA_DIR / f.filename).is_file() for f in files) else "download"
    if name == "sgd":
        if (root / SGD_DIR / SGD_FILE).is_file():
            return "present"
        return "download"
    if name in PAIR_DATASETS:
        return "local"
    raise GenlabError(f"unknown text-pair data set {name!r}", "use tatoeba-cmn, sgd, pairs:FILE or dialogue:FILE")


def load_pair_examples(spec: PairDataSpec, root: Path | None = None) -> dict[str, RawSplit]:
    """The data set's splits as text (before `limit`)."""
    root = Path(root if root is not None else data_root())
    kind, _, arg = spec.name.partition(":")
    if kind == "tatoeba-cmn":
        return _tatoeba(spec.direction, root)
    if kind == "pairs":
        return _pairs_splits(spec, Path(arg).expanduser())
    if kind == "sgd":
        dialogues = _sgd_dialogues(root)
    else:
        dialogues = read_dialogues(Path(arg).expanduser())
    return _dialogue_splits(dialogues, spec)


# -- tatoeba-cmn


def _tatoeba(direction: str, root: Path) -> dict[str, RawSplit]:
    paths = ensure_files(TATOEBA_DIR, [TATOEBA_PAIRS, *TATOEBA_SPLITS.values()], root)
    pairs = _tatoeba_aligned(*(str(p) for p in paths))
    flip = direction == "zh-en"
    return {split: RawSplit([p[flip] for p in rows], [p[not flip] for p in rows]) for split, rows in pairs.items()}


def _letters(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKC", text).lower() if unicodedata.category(c)[0] in "LN")


@lru_cache(maxsize=2)
def _tatoeba_aligned(pairs_path: str, *split_paths: str) -> dict[str, list[tuple[str, str]]]:
    """Each line of the split files -> its original (English, Chinese) line of cmn.txt (see the docstring)."""
    import difflib

    from scipy.optimize import linear_sum_assignment

    originals = [line.split("\t")[:2] for line in Path(pairs_path).read_text(encoding="utf-8").splitlines()]
    by_key: dict[str, list[int]] = {}
    for i, (_, zh) in enumerate(originals):
        by_key.setdefault(_letters(zh), []).append(i)
    rows = [(split, *line.split("\t")) for split, path in zip(SPLITS, split_paths)
            for line in Path(path).read_text(encoding="utf-8").splitlines()]
    groups: dict[str, list[int]] = {}
    for j, (_, _, zh) in enumerate(rows):
        groups.setdefault(_letters(zh), []).append(j)
    match = {}
    for key, members in groups.items():
        candidates = by_key.get(key, [])
        if len(candidates) != len(members):
            raise GenlabError(f"the tatoeba-cmn split files do not match {pairs_path}",
                              "the files are not the published ones; delete them so they are downloaded again")
        if len(members) == 1:
            match[members[0]] = candidates[0]
            continue
        english = [_letters(_untokenize(rows[j][1])) for j in members]
        similarity = np.array([[difflib.SequenceMatcher(None, e, _letters(originals[i][0]), autojunk=False).ratio()
                                for i in candidates] for e in english])
        for a, b in zip(*linear_sum_assignment(-similarity)):
            match[members[a]] = candidates[b]
    out: dict[str, list[tuple[str, str]]] = {split: [] for split in SPLITS}
    for j, (split, _, _) in enumerate(rows):
        en, zh = originals[match[j]]
        out[split].append((en, zh))
    return out


def _untokenize(text: str) -> str:
    return text.replace("&apos;", "'").replace("&quot;", '"').replace("@-@", "-").replace("&amp;", "&")


# -- pairs:FILE


def read_pairs_file(path: Path, source_column: str, target_column: str, delimiter: str | None = None,
                    split_column: str | None = None) -> tuple[list[str], list[str], list[str] | None]:
    """Sources, targets (and each row's split, if asked) of a TSV/CSV file with a header line."""
    from .tables import read_columns, require_table
    from .text import read_text_file

    require_table(path, "pairs")
    columns = {"source_column": source_column, "target_column": target_column}
    if split_column:
        columns["split_column"] = split_column
    sources, targets, splits = [], [], []
    for line, (source, target, *split) in read_columns(path, read_text_file(path), columns, delimiter, filled=2,
                                                       filled_names="source or target"):
        sources.append(source)
        targets.append(target)
        if split_column:
            splits.append(_split_name(split[0], f"{path}, line {line}"))
    if not targets:
        raise GenlabError(f"{path} has no pairs after its header line", "add one source/target pair per line")
    return sources, targets, (splits if split_column else None)


def _split_name(value: str, where: str) -> str:
    name = SPLIT_NAMES.get(value.lower())
    if name is None:
        raise GenlabError(f"{where}: unknown split {value!r}", "use train, dev (or val) or test")
    return name


def _pairs_splits(spec: PairDataSpec, path: Path) -> dict[str, RawSplit]:
    sources, targets, splits = read_pairs_file(path, spec.source_column, spec.target_column, spec.delimiter,
                                               spec.split_column)
    if splits is None:
        splits = _grouped_split(sources, spec)
    out = {}
    for split in SPLITS:
        pick = [i for i, s in enumerate(splits) if s == split]
        out[split] = RawSplit([sources[i] for i in pick], [targets[i] for i in pick])
    return out


def _grouped_split(keys: list, spec: PairDataSpec) -> list[str]:
    """A seeded split of whole groups (rows sharing a key) by the spec's fractions."""
    unique = sorted(set(keys))
    order = np.random.default_rng(spec.seed).permutation(len(unique))
    n_val = max(1, int(round(len(unique) * spec.val_fraction))) if len(unique) >= 3 else 0
    n_test = max(1, int(round(len(unique) * spec.test_fraction))) if len(unique) >= 3 else 0
    where = {}
    for rank, u in enumerate(order):
        where[unique[u]] = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
    return [where[k] for k in keys]


# -- dialogues


@dataclass
class Dialogue:
    id: str
    split: str | None
    turns: list[tuple[str, str]]  # (role, text), role "user" or "assistant"


ROLES = {"user": "user", "system": "assistant", "assistant": "assistant"}


def read_dialogues(path: Path) -> list[Dialogue]:
    """Conversations from JSON lines (.gz read as gzip); errors name the file and line."""
    if not path.is_file():
        raise GenlabError(f"dialogue: {path} does not exist or is not a file",
                          "give a JSON-lines file of conversations")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise GenlabError(f"{path} is a damaged gzip file ({e})",
                              "replace it, or delete it to fetch it again") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise GenlabError(f"{path} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start} is invalid)",
                          "write the file as UTF-8 JSON lines") from None
    return parse_dialogues(text, str(path))


def parse_dialogues(text: str, source: str) -> list[Dialogue]:
    """Conversations from JSON-lines text; `source` names the file in errors."""
    dialogues = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            dialogues.append(_dialogue(line, f"{source}, line {number}", number))
    if not dialogues:
        raise GenlabError(f"{source} holds no conversations",
                          'one JSON object per line: {"turns": [["USER", "..."], ...]}')
    with_split = sum(d.split is not None for d in dialogues)
    if 0 < with_split < len(dialogues):
        first = next(i for i, d in enumerate(dialogues) if d.split is None)
        raise GenlabError(f"{source}: some conversations name their split and others do not (conversation "
                          f"{first + 1} does not)", 'give every line a "split" (train, dev, test), or none')
    return dialogues


def _dialogue(line: str, where: str, number: int) -> Dialogue:
    shape = 'each line is one JSON object: {"turns": [["USER", "text"], ["SYSTEM", "text"], ...]}'
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise GenlabError(f"{where}: not valid JSON ({e.msg} at column {e.colno})", shape) from None
    if not isinstance(obj, dict) or not isinstance(obj.get("turns"), list):
        raise GenlabError(f"{where}: no \"turns\" list", shape)
    turns = []
    for k, turn in enumerate(obj["turns"], start=1):
        if isinstance(turn, dict):
            speaker = turn.get("speaker", turn.get("role"))
            text = turn.get("utterance", turn.get("content", turn.get("text")))
        elif isinstance(turn, (list, tuple)) and len(turn) == 2:
            speaker, text = turn
        else:
            raise GenlabError(f"{where}: turn {k} is not a [speaker, text] pair", shape)
        role = ROLES.get(speaker.lower()) if isinstance(speaker, str) else None
        if role is None:
            raise GenlabError(f"{where}: turn {k} has speaker {speaker!r}",
                              "use USER and SYSTEM (as in SGD) or user and assistant")
        if not isinstance(text, str):
            raise GenlabError(f"{where}: turn {k} has no text", shape)
        turns.append((role, text.strip()))
    split = obj.get("split")
    if split is not None:
        split = _split_name(str(split), where)
    return Dialogue(str(obj.get("id", number)), split, turns)


def _dialogue_splits(dialogues: list[Dialogue], spec: PairDataSpec) -> dict[str, RawSplit]:
    if dialogues[0].split is None:
        for dialogue, split in zip(dialogues, _grouped_split(list(range(len(dialogues))), spec)):
            dialogue.split = split
    out = {split: RawSplit([], [], []) for split in SPLITS}
    for dialogue in dialogues:
        part = out[dialogue.split]
        for i, (role, text) in enumerate(dialogue.turns):
            if role != "assistant" or i == 0 or not text:
                continue
            context = tuple(dialogue.turns[max(0, i - spec.context_turns):i])
            part.sources.append(render_turns(context))
            part.targets.append(text)
            part.contexts.append(context)
    return out


def _sgd_dialogues(root: Path) -> list[Dialogue]:
    """The SGD conversations: from the converted file, else from the original files (downloaded if
    need be), converted once and kept as that file."""
    path = root / SGD_DIR / SGD_FILE
    if path.is_file():
        return read_dialogues(path)
    files = [f for split in ("train", "dev", "test") for f in SGD_FILES[split]]
    paths = ensure_files(SGD_ORIGINALS_DIR, files, root)
    lines = []
    for remote, original in zip(files, paths):
        split = remote.filename.partition("_")[0]
        try:
            conversations = json.loads(original.read_text(encoding="utf-8"))
            lines += [json.dumps({"id": d["dialogue_id"], "split": split, "services": d.get("services", []),
                                  "turns": [[t["speaker"], t["utterance"]] for t in d["turns"]]}, ensure_ascii=False)
                      for d in conversations]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise GenlabError(f"cannot read {original} as SGD conversations ({e})",
                              "delete it so it is downloaded again") from None
    text = "\n".join(lines) + "\n"
    try:
        from ..fileio import atomic_write_bytes

        atomic_write_bytes(path, gzip.compress(text.encode("utf-8"), mtime=0))
        warn(f"converted the {len(files)} SGD files to {path} ({len(lines):,} conversations)")
    except OSError as e:  # a read-only data folder: convert again next time
        warn(f"cannot keep the converted SGD conversations in {path} ({e.strerror or e}); they are converted each time")
    return parse_dialogues(text, str(path))


# ----------------------------------------------------------------------------- the data


@dataclass
class PairSplit:
    src: torch.Tensor  # int32 [N, longest source], right-padded with <pad> = 0
    src_len: torch.Tensor  # int64 [N]
    tgt: torch.Tensor  # int32 [N, longest target]
    tgt_len: torch.Tensor  # int64 [N]
    sources: list[str]  # the source texts (dialogue: the context rendered "User: ...\nAssistant: ...")
    targets: list[str]  # the target texts: the references
    contexts: list[tuple] | None = None  # dialogue: each source's (role, text) turns, newest last

    def __len__(self) -> int:
        return len(self.targets)


class PairData:
    """Text pairs as padded id tensors per split, with the texts they came from and the tokenizer.

    batch(split, indices) -> {"src": int64 [B, S], "tgt": int64 [B, T]}, each trimmed to the
    longest row of the batch. The same rows for every split: the Trainer chooses the indices.
    """

    classes: list = []

    def __init__(self, spec: PairDataSpec, tokenizer: PairTokenizer, splits: dict[str, PairSplit], truncated: dict):
        self.spec = spec
        self.tokenizer = tokenizer
        self.train, self.val, self.test = splits["train"], splits["val"], splits["test"]
        self.truncated = truncated  # split -> {"sources": n, "targets": n}

    def split(self, name: str) -> PairSplit:
        if name not in SPLITS:
            raise GenlabError(f"unknown split {name!r}", "use train, val or test")
        return getattr(self, name)

    def num_examples(self, split: str) -> int:
        return len(self.split(split))

    def batch(self, split: str, indices, generator: torch.Generator | None = None) -> dict:
        part = self.split(split)
        idx = torch.as_tensor(indices, dtype=torch.long)
        if idx.numel() == 0:
            raise GenlabError("a batch needs at least one example")
        longest_src = int(part.src_len[idx].max())
        longest_tgt = int(part.tgt_len[idx].max())
        return {"src": part.src[idx, :longest_src].long(), "tgt": part.tgt[idx, :longest_tgt].long()}

    def order_batches(self, order: torch.Tensor, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """An epoch's random order of training pairs, rearranged so that each batch holds pairs of similar length.

        The Trainer asks once per epoch and cuts the result into consecutive batches. Padding costs as
        much as real tokens, and a random batch of 64 Tatoeba pairs is about half padding. As Hugging Face's
        group_by_length does: the order is cut into chunks of GROUP_BATCHES batches, each chunk is sorted by
        source length, then target length, and cut into batches, and the full batches are shuffled across
        the epoch, so that the steps do not run from short to long (Tatoeba at batch 64: 8% padding, from 52%;
        bench/pair_padding.py). Deterministic given the generator (exact resume); data.group_by_length=false
        keeps the random order.
        """
        if not self.spec.group_by_length or batch_size <= 1:
            return order
        full = len(order) // batch_size * batch_size
        if full == 0:
            return order
        chunk = GROUP_BATCHES * batch_size
        grouped = torch.cat([_by_lengths(order[i : min(i + chunk, full)], self.train) for i in range(0, full, chunk)])
        batches = grouped.view(-1, batch_size)[torch.randperm(full // batch_size, generator=generator)]
        return torch.cat([batches.reshape(-1), order[full:]])

    def model_fields(self) -> dict:
        """What a model config takes from the data (filled in by genlab.train)."""
        return {"vocab_size": self.tokenizer.vocab_size, "pad_id": PAD_ID, "bos_id": BOS_ID, "eos_id": EOS_ID,
                "max_source_len": self.spec.max_source_len, "max_target_len": self.spec.max_target_len}

    def sources(self, split: str) -> list[str]:
        return self.split(split).sources

    def targets(self, split: str) -> list[str]:
        return self.split(split).targets

    def contexts(self, split: str) -> list[tuple] | None:
        return self.split(split).contexts

    @property
    def is_dialogue(self) -> bool:
        return self.spec.is_dialogue

    @property
    def target_language(self) -> str | None:
        """"zh" where the targets are mostly Chinese (sacreBLEU's zh tokenizer then), else None."""
        return "zh" if _mostly_han(self.train.targets[:2000]) else None

    @property
    def source_language(self) -> str | None:
        return "zh" if _mostly_han(self.train.sources[:2000]) else None


GROUP_BATCHES = 100  # batches per length-sorted chunk in order_batches


def _by_lengths(indices: torch.Tensor, split: PairSplit) -> torch.Tensor:
    """indices sorted by source length, ties by target length (two stable sorts)."""
    indices = indices[torch.sort(split.tgt_len[indices], stable=True).indices]
    return indices[torch.sort(split.src_len[indices], stable=True).indices]


HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")


def _mostly_han(texts: list[str]) -> bool:
    letters = sum(sum(c.isalpha() for c in t) for t in texts)
    return letters > 0 and sum(len(HAN.findall(t)) for t in texts) > 0.5 * letters


def _limit(raw: dict[str, RawSplit], spec: PairDataSpec) -> dict[str, RawSplit]:
    if spec.limit is None:
        return raw
    out = {}
    for i, (split, part) in enumerate(raw.items()):
        if len(part) <= spec.limit:
            out[split] = part
            continue
        keep = np.sort(np.random.default_rng([spec.seed, i]).choice(len(part), spec.limit, replace=False))
        out[split] = part.subset(keep)
    return out


def _training_text(part: RawSplit) -> list[str]:
    if part.contexts is None:
        return part.sources + part.targets
    # Each utterance once (a turn is in the context of several targets).
    seen = dict.fromkeys(text for context in part.contexts for _, text in context)
    seen.update(dict.fromkeys(part.targets))
    return list(seen)


def _padded(rows: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    table = np.zeros((len(rows), int(lengths.max(initial=1))), dtype=np.int32)
    if len(rows):
        flat = np.concatenate(rows)
        row_of = np.repeat(np.arange(len(rows)), lengths)
        col_of = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        table[row_of, col_of] = flat
    return torch.from_numpy(table), torch.from_numpy(lengths)


def _encode_split(part: RawSplit, tokenizer: PairTokenizer, spec: PairDataSpec) -> tuple[PairSplit, dict]:
    if part.contexts is None:
        sources = [_source_row(ids, spec.max_source_len) for ids in tokenizer.encode_batch(part.sources)]
        targets = [_target_row(ids, spec.max_target_len) for ids in tokenizer.encode_batch(part.targets)]
    else:  # each utterance encoded once: most are a target and in the context of the next ones
        texts = _training_text(part)
        ids_of = dict(zip(texts, tokenizer.encode_batch(texts)))
        sources = [_dialogue_row([role for role, _ in context], [ids_of[text] for _, text in context],
                                 spec.max_source_len, spec.speaker_tags) for context in part.contexts]
        targets = [_target_row(ids_of[text], spec.max_target_len) for text in part.targets]
    src, src_len = _padded([row for row, _ in sources])
    tgt, tgt_len = _padded([row for row, _ in targets])
    cut = {"sources": sum(c for _, c in sources), "targets": sum(c for _, c in targets)}
    return PairSplit(src, src_len, tgt, tgt_len, part.sources, part.targets, part.contexts), cut


def _report_truncation(truncated: dict, spec: PairDataSpec) -> None:
    sources = sum(t["sources"] for t in truncated.values())
    targets = sum(t["targets"] for t in truncated.values())
    if sources:
        kept = "the newest turns" if spec.is_dialogue else "the start"
        warn(f"{sources:,} source(s) of {spec.name} were longer than data.max_source_len={spec.max_source_len} "
             f"tokens and were cut, keeping {kept} ({_by_split(truncated, 'sources')})")
    if targets:
        warn(f"{targets:,} target(s) of {spec.name} were longer than data.max_target_len={spec.max_target_len} "
             f"tokens and were cut, keeping the start and <eos> ({_by_split(truncated, 'targets')})")


def _by_split(truncated: dict, side: str) -> str:
    return ", ".join(f"{split} {counts[side]:,}" for split, counts in truncated.items() if counts[side])


def load_pair_data(spec: PairDataSpec | dict | str, tokenizer: PairTokenizer | None = None,
                   root: Path | None = None) -> PairData:
    """Load a text-pair data set, learn its tokenizer on the train split (unless one is given: a
    resumed run or an evaluation passes the model's own) and encode every split."""
    from ..config import from_dict

    if isinstance(spec, str):
        spec = PairDataSpec(name=spec)
    elif isinstance(spec, dict):
        spec = from_dict(PairDataSpec, spec, "data")
    raw = _limit(load_pair_examples(spec, root), spec)
    if len(raw["train"]) == 0:
        raise GenlabError(f"the train split of {spec.name} is empty", "give more pairs (or conversations)")
    if tokenizer is None:
        tokenizer = PairTokenizer.train(_training_text(raw["train"]), spec.vocab_size, spec.tokenizer)
    elif not isinstance(tokenizer, PairTokenizer):
        raise GenlabError("this model's tokenizer is not a text-pair tokenizer", "train a text-pair model on this data")
    elif tokenizer.kind != spec.tokenizer:
        raise GenlabError(f"the model's tokenizer is {tokenizer.kind}, but the data asks for {spec.tokenizer}")
    splits, truncated = {}, {}
    for split in SPLITS:
        splits[split], truncated[split] = _encode_split(raw[split], tokenizer, spec)
    _report_truncation(truncated, spec)
    return PairData(spec, tokenizer, splits, truncated)
