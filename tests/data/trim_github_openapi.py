"""Cut GitHub's OpenAPI description to the endpoints patchgate calls (and every $ref they reach).

python3 trim_github_openapi.py api.github.com.json gh-subset.json, where api.github.com.json is
generated/api.github.com.json of the npm package @octokit/openapi (npm pack @octokit/openapi).
From ../shared/reference/github-rest-subset/trim.py, with patchgate's endpoints added.
"""

import json
import sys

with open(sys.argv[1]) as fh:
    full = json.load(fh)
WANT = {
    "/repos/{owner}/{repo}/issues/{issue_number}/comments": ["post", "get"],
    "/repos/{owner}/{repo}/issues/comments/{comment_id}": ["patch"],
    "/repos/{owner}/{repo}/statuses/{sha}": ["post"],
    "/repos/{owner}/{repo}/commits/{ref}/status": ["get"],
    "/repos/{owner}/{repo}/commits/{ref}/check-runs": ["get"],
    "/repos/{owner}/{repo}/commits/{commit_sha}/pulls": ["get"],
    "/repos/{owner}/{repo}/pulls/{pull_number}/requested_reviewers": ["post"],
    # patchgate's additions (issue 15): annotations, PRs, issues, branches
    "/repos/{owner}/{repo}/check-runs/{check_run_id}/annotations": ["get"],
    "/repos/{owner}/{repo}/pulls": ["get", "post"],
    "/repos/{owner}/{repo}/pulls/{pull_number}": ["get", "patch"],
    "/repos/{owner}/{repo}/issues/{issue_number}": ["get"],
    "/repos/{owner}/{repo}/branches/{branch}": ["get"],
}
out = {k: full[k] for k in ("openapi", "info", "servers")}
out["paths"] = {p: {m: full["paths"][p][m] for m in ms} for p, ms in WANT.items()}
out["components"] = {}
todo = [out["paths"]]
seen = set()
while todo:
    node = todo.pop()
    if isinstance(node, dict):
        for k, v in node.items():
            if (
                k == "$ref"
                and isinstance(v, str)
                and v.startswith("#/components/")
                and v not in seen
            ):
                seen.add(v)
                _, _, sect, name = v.split("/", 3)
                target = full["components"][sect][name]
                out["components"].setdefault(sect, {})[name] = target
                todo.append(target)
            else:
                todo.append(v)
    elif isinstance(node, list):
        todo.extend(node)
with open(sys.argv[2], "w") as fh:
    json.dump(out, fh)
print(len(seen), "components;", len(json.dumps(out)) // 1024, "KiB")
