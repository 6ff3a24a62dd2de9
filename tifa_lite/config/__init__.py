from tifa_lite.config.loader import dump_config, load_recipe
from tifa_lite.config.schema import RecipeConfig

__all__ = ["RecipeConfig", "load_recipe", "dump_config"]
