"""The supervisor as the CLI starts it: the runtime's supervisor, with the CLI's parser as
its front, so a thin client's ``edu run`` command line (``fastrun``) is read there.

The runtime never imports the CLI; the CLI hands it this front instead
(``client.use_program("edu_cli.supervise")``).
"""

from edu_runtime.life import supervisor

from .run import supervised_request

if __name__ == "__main__":
    supervisor.main(front=supervised_request)
