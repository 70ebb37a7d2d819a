"""What each v2 HTTP route is, for the OpenAPI document: its id, summary, success
answer, the problem statuses it can answer and the links from its answer.

Keyed by (method, path after the prefix), as the routes are registered; openapi.py
walks the app's routes and refuses to build a document in which a route has no
entry here (or an entry has no route). Request shapes are not here: they are
declared on the handlers (request_schemas.takes), which validate with them.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field, replace
from typing import Any

from . import response_schemas as out

# The problem statuses each kind of operation can answer (problems.CATALOGUE says
# which types each is). A signed request: bad auth params, a malformed body or
# version header (400), a wrong signature (401), a body over max_body_bytes (413),
# the key's rate (429), too many unverified bodies or no spawner (503).
SIGNED = (400, 401, 413, 429, 503)
KERNEL = (*SIGNED, 404)  # the kernel in the path: unknown, foreign or gone
KERNEL_WORK = (*KERNEL, 500)  # and the kernel failed at it (start, file op, destroy)
# a folder's files are read and written by a throw-away kernel of the key
FOLDER_WORK = (*SIGNED, 404, 412, 500)


@dataclass(frozen=True)
class Operation:
    """One route's entry in the document."""

    id: str
    summary: str
    tag: str
    _: KW_ONLY
    body: dict[str, Any] | None = None  # the success answer's JSON schema; None: empty
    status: int | None = 200  # None: it never succeeds
    media: str = "application/json"
    errors: tuple[int, ...] = SIGNED
    description: str = ""
    links: dict[str, dict] = field(default_factory=dict)
    public: bool = False  # answered without a signature
    upload: bool = False  # its body is a multipart/form-data upload


def _link(operation_id: str, description: str, **parameters: str) -> dict:
    return {"operationId": operation_id, "parameters": parameters, "description": description}


NEW_KERNEL = "$response.body#/kernelId"
SAME_KERNEL = "$request.path.kernel_id"


def _kernel_links(kernel: str, *ids: str) -> dict[str, dict]:
    return {i: _link(i, "the same kernel", kernel_id=kernel) for i in ids}


_AFTER_CREATE = _kernel_links(
    NEW_KERNEL,
    "getKernelInfo",
    "executeCode",
    "completeCode",
    "interruptKernel",
    "uploadKernelFiles",
    "listKernelFiles",
    "downloadKernelFiles",
    "getKernelLogs",
    "restartKernel",
    "destroyKernel",
)
_CREATE_KERNEL = Operation(
    "createKernel",
    "Create a kernel, or get the one this clientSessionToken names",
    "kernels",
    body=out.KERNEL_CREATED,
    status=201,
    errors=(*KERNEL_WORK, 406, 412),
    description="404: an unknown lang (image-not-found) or folder; 406: limits over the "
    "server's maximum; 412: the key's concurrency; 503: max_kernels reached, or the "
    "lang's runtime is not installed; 400 kernel-already-exists: the token's kernel "
    "runs another lang.",
    links=_AFTER_CREATE,
)
_FOLDER_BY_NAME = "$response.body#/name"


def _folder_links(value: str, *ids: str) -> dict[str, dict]:
    return {i: _link(i, "the new folder", name=value) for i in ids}


_AFTER_FOLDER = _folder_links(
    _FOLDER_BY_NAME,
    "getFolder",
    "uploadFolderFiles",
    "makeFolderDirectory",
    "listFolderFiles",
    "downloadFolderFiles",
    "deleteFolderFiles",
    "deleteFolder",
)
_CREATE_FOLDER = Operation(
    "createFolder",
    "Create a virtual folder",
    "folders",
    body=out.FOLDER_CREATED,
    status=201,
    errors=(*SIGNED, 412),
    description="400 folder-already-exists: the key has a folder of that name; 412: the "
    "key's folder count or bytes.",
    links=_AFTER_FOLDER,
)
_LIST_FOLDERS = Operation(
    "listFolders", "The key's virtual folders", "folders", body=out.FOLDER_LIST
)
_GET_FOLDER = Operation(
    "getFolder",
    "A folder's size and file count",
    "folders",
    body=out.FOLDER_INFO,
    errors=FOLDER_WORK,
)
_DELETE_FOLDER = Operation(
    "deleteFolder",
    "Delete a folder and its files",
    "folders",
    status=204,
    errors=(*SIGNED, 404),
    description="400: a kernel mounts it, or a folder operation is using it.",
)
_TAR_FILES = "Each file as a tar archive of one member, one part each, in a multipart/mixed body."

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", ""): Operation(
        "getVersion", "The API version", "meta", body=out.VERSION, errors=(), public=True
    ),
    ("GET", "/authorize"): Operation(
        "authorize",
        "Check that signing works: echoes `echo`",
        "meta",
        body=out.AUTHORIZED,
    ),
    ("POST", "/authorize"): Operation(
        "authorizePost", "Check that signing works (POST)", "meta", body=out.AUTHORIZED
    ),
    ("GET", "/kernel/languages"): Operation(
        "listLanguages",
        "The languages this host runs, their aliases and versions",
        "kernels",
        body=out.LANGUAGES,
        errors=(),
        public=True,
    ),
    ("POST", "/kernel/create"): _CREATE_KERNEL,
    ("POST", "/kernel/"): replace(
        _CREATE_KERNEL, id="createKernelV3", summary="Create a kernel ([v3])"
    ),
    ("GET", "/kernel/{kernel_id}"): Operation(
        "getKernelInfo",
        "A kernel's limits and usage",
        "kernels",
        body=out.KERNEL_INFO,
        errors=KERNEL,
    ),
    ("DELETE", "/kernel/{kernel_id}"): Operation(
        "destroyKernel",
        "Destroy a kernel",
        "kernels",
        status=204,
        errors=KERNEL_WORK,
        description="500 kernel-destruction-failed: a process of it would not die.",
    ),
    ("PATCH", "/kernel/{kernel_id}"): Operation(
        "restartKernel",
        "Restart a kernel: same id and files, fresh state",
        "kernels",
        status=204,
        errors=KERNEL_WORK,
    ),
    ("POST", "/kernel/{kernel_id}"): Operation(
        "executeCode",
        "Run code, or go on with the run (spec §6)",
        "kernels",
        body=out.EXECUTE_RESULT,
        errors=KERNEL_WORK,
        description="A call holds up to hold_seconds for output, then answers `continued`; "
        "`waiting-input` wants a call with mode input. `exec-timeout` destroys the kernel.",
        links={
            **_kernel_links(
                SAME_KERNEL,
                "executeCode",
                "listKernelFiles",
                "downloadKernelFiles",
                "getKernelInfo",
                "destroyKernel",
            )
        },
    ),
    ("POST", "/kernel/{kernel_id}/interrupt"): Operation(
        "interruptKernel", "Interrupt the kernel's run", "kernels", status=204, errors=KERNEL
    ),
    ("POST", "/kernel/{kernel_id}/complete"): Operation(
        "completeCode",
        "Completions of code (python3 kernels)",
        "kernels",
        body=out.COMPLETE_RESULT,
        errors=KERNEL,
    ),
    ("GET", "/kernel/{kernel_id}/logs"): Operation(
        "getKernelLogs",
        "Not offered: 503 not-implemented (each run's console is its execute result)",
        "kernels",
        status=None,
        errors=KERNEL,
    ),
    ("POST", "/kernel/{kernel_id}/upload"): Operation(
        "uploadKernelFiles",
        "Write files into the kernel's /home/work",
        "files",
        status=204,
        errors=KERNEL_WORK,
        description="At most max_upload_files files of max_file_bytes each.",
        upload=True,
        links=_kernel_links(SAME_KERNEL, "listKernelFiles", "downloadKernelFiles"),
    ),
    ("GET", "/kernel/{kernel_id}/files"): Operation(
        "listKernelFiles",
        "List a directory of the kernel's /home/work",
        "files",
        body=out.KERNEL_FILES,
        errors=KERNEL_WORK,
        description="The path comes in the body (as the clients send it) or as ?path=.",
        links=_kernel_links(SAME_KERNEL, "downloadKernelFiles", "destroyKernel"),
    ),
    ("GET", "/kernel/{kernel_id}/download"): Operation(
        "downloadKernelFiles",
        "Download files of the kernel's /home/work",
        "files",
        body={},
        media="multipart/mixed",
        errors=KERNEL_WORK,
        description=_TAR_FILES,
        links=_kernel_links(SAME_KERNEL, "destroyKernel"),
    ),
    ("POST", "/folders"): _CREATE_FOLDER,
    ("POST", "/folders/"): replace(
        _CREATE_FOLDER, id="createFolderSlash", summary="Create a virtual folder (/folders/)"
    ),
    ("GET", "/folders"): _LIST_FOLDERS,
    ("GET", "/folders/"): replace(
        _LIST_FOLDERS, id="listFoldersSlash", summary="The key's virtual folders (/folders/)"
    ),
    ("POST", "/folder/create"): replace(
        _CREATE_FOLDER,
        id="createFolderV2",
        summary="Create a virtual folder (DOC-v2's form)",
        body=out.FOLDER_CREATED_V2,
        links=_folder_links("$response.body#/folderId", "getFolderV2", "deleteFolderV2"),
    ),
    ("GET", "/folder/{name}"): replace(
        _GET_FOLDER, id="getFolderV2", summary="A folder's size and file count (DOC-v2's path)"
    ),
    ("DELETE", "/folder/{name}"): replace(
        _DELETE_FOLDER, id="deleteFolderV2", summary="Delete a folder (DOC-v2's path)"
    ),
    ("GET", "/folders/{name}"): _GET_FOLDER,
    ("DELETE", "/folders/{name}"): _DELETE_FOLDER,
    ("POST", "/folders/{name}/upload"): Operation(
        "uploadFolderFiles",
        "Write files into a folder",
        "folders",
        status=201,
        errors=FOLDER_WORK,
        description="As a kernel upload; 412 past the folder's quota.",
        upload=True,
    ),
    ("POST", "/folders/{name}/mkdir"): Operation(
        "makeFolderDirectory",
        "Make a directory in a folder",
        "folders",
        status=201,
        errors=FOLDER_WORK,
    ),
    ("GET", "/folders/{name}/files"): Operation(
        "listFolderFiles",
        "List a directory of a folder",
        "folders",
        body=out.FOLDER_FILES,
        errors=FOLDER_WORK,
        description="The path comes in the body or as ?path=.",
    ),
    ("GET", "/folders/{name}/download"): Operation(
        "downloadFolderFiles",
        "Download files of a folder",
        "folders",
        body={},
        media="multipart/mixed",
        errors=FOLDER_WORK,
        description=_TAR_FILES,
    ),
    ("DELETE", "/folders/{name}/delete_files"): Operation(
        "deleteFolderFiles",
        "Delete files of a folder",
        "folders",
        body=out.EMPTY,
        errors=FOLDER_WORK,
    ),
    ("GET", "/openapi.json"): Operation(
        "getOpenApi", "This document", "meta", body=out.OPENAPI, errors=(), public=True
    ),
    ("GET", "/docs"): Operation(
        "getDocs",
        "This document as a page (Redoc)",
        "meta",
        body={},
        media="text/html",
        errors=(),
        public=True,
    ),
    ("GET", "/docs/redoc.standalone.js"): Operation(
        "getDocsScript",
        "The page's script, served from here",
        "meta",
        body={},
        media="text/javascript",
        errors=(404,),
        public=True,
        description="404 if the server was installed without it (scripts/setup-web).",
    ),
}
