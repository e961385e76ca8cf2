"""The pruned-model format: a save_pretrained directory whose layers each keep their own heads and FFN width.

Heads reload natively (config.json's `pruned_heads`); FFN widths that differ between layers do not. tinyship copies
this file into such a directory and names it in config.json (model_type "tinyship_pruned_<base>", auto_map), so
plain `AutoModel*.from_pretrained(dir)` refuses the directory instead of loading mis-shaped weights, and
`from_pretrained(dir, trust_remote_code=True)` loads it exactly with transformers alone. With tinyship installed,
`tinyship.compress.load_model(dir)` reads it without running this file. Imports only torch and transformers.
"""

import json
import shutil
from pathlib import Path

import torch
import transformers
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

KEY = "tinyship_pruning"  # config.json: {"intermediate_sizes": [one per layer], "model_type": the base type}
PREFIX = "tinyship_pruned_"
FAMILIES = {"bert": "Bert", "roberta": "Roberta", "xlm-roberta": "XLMRoberta", "camembert": "Camembert",
            "electra": "Electra"}
HEADS = {"AutoModel": "Model", "AutoModelForSequenceClassification": "ForSequenceClassification",
         "AutoModelForTokenClassification": "ForTokenClassification",
         "AutoModelForQuestionAnswering": "ForQuestionAnswering"}


def set_ffn_widths(model, widths: list[int]) -> None:
    """Give each encoder layer an FFN of its own width (fresh weights, for the checkpoint's to load into)."""
    for layer, width in zip(model.base_model.encoder.layer, widths):
        first, second = layer.intermediate.dense, layer.output.dense
        if first.out_features != width:
            layer.intermediate.dense = torch.nn.Linear(first.in_features, width)
            layer.output.dense = torch.nn.Linear(width, second.out_features)


def ffn_widths(config) -> list[int] | None:
    return (getattr(config, KEY, None) or {}).get("intermediate_sizes")


def plain_config(directory: str | Path) -> dict:
    """config.json as its base architecture's: a tinyship-pruned one without its custom-code entries."""
    data = json.loads((Path(directory) / "config.json").read_text(encoding="utf-8"))
    if str(data.get("model_type", "")).startswith(PREFIX):
        data.pop("auto_map", None)
        data["model_type"] = data[KEY]["model_type"]
    return data


def read_config(directory: str | Path):
    """The directory's config, a tinyship-pruned one as its base architecture's (tinyship's loader rebuilds it)."""
    data = plain_config(directory)
    if KEY not in data:
        return transformers.AutoConfig.from_pretrained(directory)
    return CONFIG_MAPPING[data["model_type"]].from_dict(data)


def mark(directory: str | Path) -> None:
    """Make a saved directory whose FFN widths differ between layers load only through code that rebuilds them."""
    directory = Path(directory)
    path = directory / "config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    widths = (data.get(KEY) or {}).get("intermediate_sizes")
    if not widths or len(set(widths)) == 1:
        return
    base = data[KEY]["model_type"] if data["model_type"].startswith(PREFIX) else data["model_type"]
    family = FAMILIES[base]
    data[KEY]["model_type"] = base
    data["model_type"] = PREFIX + base
    data["auto_map"] = {"AutoConfig": f"{Path(__file__).stem}.Pruned{family}Config",
                        **{auto: f"{Path(__file__).stem}.Pruned{family}{head}" for auto, head in HEADS.items()}}
    shutil.copyfile(__file__, directory / Path(__file__).name)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _pruned_classes(base_type: str, family: str) -> dict[str, type]:
    """Config and model classes for transformers' custom-code loading: the base classes, FFN widths rebuilt."""
    config_class = type(f"Pruned{family}Config", (getattr(transformers, f"{family}Config"),),
                        {"model_type": PREFIX + base_type})
    classes = {config_class.__name__: config_class}
    for head in HEADS.values():
        base = getattr(transformers, family + head)

        def __init__(self, config, *args, _base=base, **kwargs):
            _base.__init__(self, config, *args, **kwargs)
            set_ffn_widths(self, ffn_widths(config))

        classes[f"Pruned{family}{head}"] = type(f"Pruned{family}{head}", (base,),
                                                {"config_class": config_class, "__init__": __init__})
    return classes


for _base_type, _family in FAMILIES.items():
    globals().update(_pruned_classes(_base_type, _family))
