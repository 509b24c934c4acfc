"""The recipe format: a JSON file of a method's hyperparameters and schedule, by name from
pretraining/recipes (installed as the package data of ``nnunet_ssl.recipes``) or by path, checked for its shape."""
import json
import os
from importlib import resources

from nnunet_ssl.errors import SSLUserError

RECIPE_KEYS = {"method": str, "description": str, "method_config": dict, "schedule": dict, "sources": dict}


def load_recipe(name_or_path: str) -> dict:
    """A recipe from pretraining/recipes (by name) or a JSON file path, checked for its shape."""
    if os.path.isfile(name_or_path):
        with open(name_or_path) as f:
            text, where = f.read(), name_or_path
    elif os.path.isdir(name_or_path):
        raise SSLUserError(f"--recipe {name_or_path} is a folder, not a recipe file.",
                           "pass a recipe's JSON file or name (pretraining/recipes)")
    elif os.sep in name_or_path or name_or_path.endswith(".json"):  # meant as a file
        raise SSLUserError(f"recipe file {name_or_path} does not exist.",
                           "check the path, or pass a recipe's name (pretraining/recipes)")
    else:
        folder = resources.files("nnunet_ssl.recipes") / "recipes"
        candidate = folder / f"{name_or_path}.json"
        if not candidate.is_file():
            names = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))
            raise SSLUserError(f"unknown recipe {name_or_path!r}.", f"use one of {names} or a path to a JSON file")
        text, where = candidate.read_text(), str(candidate)
    return parse_recipe(text, where)


def parse_recipe(text: str, where: str) -> dict:
    """The recipe in ``text``: a JSON object with only RECIPE_KEYS, each of its type."""
    example = ('{"method": "pcl", "method_config": {"theta": 0.1}, "schedule": {"num_epochs": 100}}; see '
               "pretraining/recipes/*.json")
    try:
        recipe = json.loads(text)
    except json.JSONDecodeError as e:
        raise SSLUserError(f"recipe {where} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}.",
                           f"fix the file; a recipe looks like {example}") from None
    if not isinstance(recipe, dict):
        raise SSLUserError(f"recipe {where} is a JSON {type(recipe).__name__}, not an object.",
                           f"write it as an object, e.g. {example}")
    unknown = sorted(set(recipe) - set(RECIPE_KEYS))
    wrong = [k for k, kind in RECIPE_KEYS.items() if k in recipe and not isinstance(recipe[k], kind)]
    if unknown or wrong:
        problem = (f"unknown key(s) {unknown} (allowed: {sorted(RECIPE_KEYS)})" if unknown else
                   f"{wrong[0]!r} must be a JSON {'object' if RECIPE_KEYS[wrong[0]] is dict else 'string'}")
        raise SSLUserError(f"recipe {where}: {problem}.", f"fix the file; a recipe looks like {example}")
    return recipe
