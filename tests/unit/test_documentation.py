"""README.md documents every setting, and the project's two commands come first."""

from conveyor.settings import PROJECT_ROOT, Settings

README = (PROJECT_ROOT / "README.md").read_text()


def test_every_setting_is_in_the_readme_table():
    missing = [name.upper() for name in Settings.model_fields
               if f"`{name.upper()}`" not in README]
    assert missing == []


def test_the_readme_shows_the_two_commands_before_anything_else():
    first_commands = [line for line in README.splitlines() if line.startswith("make ")]
    assert first_commands[:2] == ["make run", "make test"]
