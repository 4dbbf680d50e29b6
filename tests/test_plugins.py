import subprocess
import sys

from twisted.application.service import IService, IServiceMaker
from twisted.plugin import IPlugin, getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

NAMES = {"echoapp", "echoapp-tcp", "echoapp-echo", "echoapp-udp", "echoapp-compose"}


class PluginDiscoveryTests(SynchronousTestCase):
    def makers(self) -> dict[str, IServiceMaker]:
        return {maker.tapname: maker for maker in getPlugins(IServiceMaker) if maker.tapname in NAMES}

    def test_all_plugins_found(self) -> None:
        self.assertEqual(set(self.makers()), NAMES)

    def test_each_is_a_service_maker_with_options(self) -> None:
        for name, maker in self.makers().items():
            self.assertTrue(verifyObject(IServiceMaker, maker), name)
            self.assertTrue(verifyObject(IPlugin, maker), name)
            self.assertTrue(maker.description, name)

    def test_defaults_make_a_service_named_for_the_plugin(self) -> None:
        names = {"echoapp-tcp": "echoapp-tcp", "echoapp-echo": "echoapp-echo", "echoapp-udp": "echoapp-udp"}
        names["echoapp"] = "echoapp"
        for tapname, name in names.items():
            options = self.makers()[tapname].options()
            options.parseOptions([])
            service = self.makers()[tapname].makeService(options)
            self.assertTrue(IService.providedBy(service), tapname)
            self.assertEqual(service.name, name)
        compose = self.makers()["echoapp-compose"].options()
        self.assertRaises(usage.UsageError, compose.parseOptions, [])

    def test_plugins_are_lazy(self) -> None:
        """Listing twistd's plugins must not import our protocol modules."""
        code = (
            "import sys\n"
            "from twisted.plugin import getPlugins\n"
            "from twisted.application.service import IService, IServiceMaker\n"
            "names = [m.tapname for m in getPlugins(IServiceMaker)]\n"
            "assert 'echoapp-tcp' in names, names\n"
            "print(sorted(m for m in sys.modules if m.startswith('echoapp')))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        self.assertEqual(out.stdout.strip(), "[]")


class PackageMetadataTests(SynchronousTestCase):
    def test_pip_show_names_a_home_page_and_an_author(self) -> None:
        from importlib.metadata import metadata

        info = metadata("echoapp")
        self.assertEqual(info["Home-page"], "https://echoapp.readthedocs.io/")  # the docs
        self.assertIn("Documentation, https://echoapp.readthedocs.io/", info.get_all("Project-URL") or [])
        self.assertEqual(info["Author"], "echoapp maintainers")


class StartUpImportTests(SynchronousTestCase):
    def test_without_metrics_no_metrics_listener_code_is_imported(self) -> None:
        """
        A plugin's service without C{--metrics} imports neither the metrics
        listener nor twisted.web's server: they cost every start-up (issue
        #27 measured the proxy's API start) for nothing.
        """
        code = (
            "import sys\n"
            "from echoapp._tap import tcp\n"
            "options = tcp.Options()\n"
            "options.parseOptions(['--listen', 'tcp:0:interface=127.0.0.1'])\n"
            "tcp.makeService(options)\n"
            "print(sorted(m for m in sys.modules if m in ('echoapp._monitor', 'twisted.web.server')))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        self.assertEqual(out.stdout.strip(), "[]", out.stderr)
