"""Lines of the files the registry issue reshaped, and the length of their central function.

    python scripts/code_shape.py            # the working tree
    python scripts/code_shape.py 05c668b    # a commit
"""
import ast, subprocess, sys
rev = sys.argv[1] if len(sys.argv) > 1 else None
def src(path):
    return subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True).stdout if rev else open(path).read()
for path, fn in [("src/genlab/cli.py", None), ("src/genlab/serve/api.py", "create_app"), ("src/genlab/training/trainer.py", "fit"), ("src/genlab/api.py", "train")]:
    text = src(path)
    if not text: print(path, "absent"); continue
    lens = {n.name: n.end_lineno - n.lineno + 1 for n in ast.walk(ast.parse(text)) if isinstance(n, ast.FunctionDef)}
    print(path, len(text.splitlines()), "lines", f"{fn} {lens.get(fn)}" if fn else "")
