"""The greeter: lesson 05's app. It greets whoever is named on its command line."""

import os
import sys

from rich.console import Console
from rich.panel import Panel

VERSION = 1

name = " ".join(sys.argv[1:]) or "world"
greeting = os.environ.get("GREETING", "Hello")
Console(width=40).print(Panel(f"{greeting}, {name}!", title=f"greeter v{VERSION}"))
